/*
 * Reference reader of the signed offline filter (issue #16), for terminal vendors to port.
 * One file, C99, no dependency beyond the C library. The layout is written down in
 * blacklist/filters/offline.py (and README.md, "Offline filter for POS"); this file
 * follows it field by field.
 *
 * What it verifies: the file's INTEGRITY, not its AUTHENTICITY.
 *   - the trailer: SHA-256 of every byte before the last 32 equals those 32 bytes;
 *   - the structure: every length is bounded by the bytes present, every field in range,
 *     no trailing bytes;
 *   - every partition body's SHA-256 equals the body_digest in the (signed) header.
 * What it does NOT verify: the signature over the header (Ed25519 over its SHA-256, or SM2
 * over its SM3) and the certificate
 * chain from the pinned root. The Python reader (blacklist.filters.offline.verify) does;
 * a terminal must have the signature verified (by its own Ed25519 code, or by the gateway
 * that loads the file) before it trusts a file. This reader prints SHA-256(header), for
 * Ed25519 the digest the signature covers, so the two can be tied together.
 *
 * Answers, checked in this order (the same as the Python reader's):
 *   MALFORMED      not a card id (32 chars: province-level 2 digits, 4 digits, 10 letters
 *                  or digits, 16 hex) / not a PSAM id (6 digits, 16 hex)
 *   EXPIRED        now >= expires_at
 *   OUT_OF_SCOPE   the id's region does not start with the file's scope
 *   MAYBE_REVOKED  a partition holding entries in the id's region says "maybe"
 *   NOT_REVOKED    otherwise (certain, as of the feeds the file names)
 *
 * Usage:
 *   offline_filter info FILE              the header, one "key value" per line
 *   offline_filter check FILE NOW         ids on stdin, one per line ("psam:ID" for a
 *                                         PSAM); one answer per line on stdout:
 *                                         VERDICT PUBLISHER|- FRESH_AT
 * Exit status: 0 answered, 2 the file is refused (the reason on stderr), 1 usage.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ SHA-256 (FIPS 180-4) */
typedef struct {
    uint32_t h[8];
    uint64_t length;
    unsigned char block[64];
    size_t used;
} sha256_ctx;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

static uint32_t ror32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(sha256_ctx *c, const unsigned char *p) {
    uint32_t w[64], a, b, d, e, f, g, h, cc, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3];
    e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d;
    c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}

static void sha256(const unsigned char *data, size_t n, unsigned char out[32]) {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    sha256_ctx c;
    size_t i;
    memcpy(c.h, init, sizeof init);
    c.length = (uint64_t)n * 8;
    for (; n >= 64; n -= 64, data += 64) sha256_block(&c, data);
    memset(c.block, 0, 64);
    memcpy(c.block, data, n);
    c.block[n] = 0x80;
    if (n >= 56) {
        sha256_block(&c, c.block);
        memset(c.block, 0, 64);
    }
    for (i = 0; i < 8; i++) c.block[56 + i] = (unsigned char)(c.length >> (56 - 8 * i));
    sha256_block(&c, c.block);
    for (i = 0; i < 32; i++) out[i] = (unsigned char)(c.h[i / 4] >> (24 - 8 * (i % 4)));
}

/* ------------------------------------------------------ XXH64, seed 0 (xxHash spec v0.1) */
static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL,
                      P3 = 0x165667B19E3779F9ULL, P4 = 0x85EBCA77C2B2AE63ULL,
                      P5 = 0x27D4EB2F165667C5ULL;

static uint64_t rol64(uint64_t x, int n) { return (x << n) | (x >> (64 - n)); }
static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t xxround(uint64_t acc, uint64_t lane) { return rol64(acc + lane * P2, 31) * P1; }
static uint64_t xxmerge(uint64_t h, uint64_t v) { return (h ^ xxround(0, v)) * P1 + P4; }

static uint64_t xxh64(const unsigned char *p, size_t n) {
    const unsigned char *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = 0 - P1;
        for (; end - p >= 32; p += 32) {
            v1 = xxround(v1, le64(p));
            v2 = xxround(v2, le64(p + 8));
            v3 = xxround(v3, le64(p + 16));
            v4 = xxround(v4, le64(p + 24));
        }
        h = rol64(v1, 1) + rol64(v2, 7) + rol64(v3, 12) + rol64(v4, 18);
        h = xxmerge(h, v1); h = xxmerge(h, v2); h = xxmerge(h, v3); h = xxmerge(h, v4);
    } else {
        h = P5;
    }
    h += (uint64_t)n;
    for (; end - p >= 8; p += 8) h = rol64(h ^ xxround(0, le64(p)), 27) * P1 + P4;
    if (end - p >= 4) {
        h = rol64(h ^ ((uint64_t)le32(p) * P1), 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++) h = rol64(h ^ (*p * P5), 11) * P1;
    h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
    return h;
}

/* ------------------------------------------ binary fuse 8 lookup (blacklist/filters/fuse.py) */
typedef struct {
    uint32_t size;
    uint64_t seed;
    uint32_t segment_length, segment_count;
    uint64_t array_length;
    const unsigned char *fingerprints;
} fuse8;

static uint64_t mix64(uint64_t h) {
    h ^= h >> 33; h *= 0xFF51AFD7ED558CCDULL; h ^= h >> 33; h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 33);
}

/* (h * m) >> 64 for m < 2**32, without a 128-bit type: the high half from 32-bit pieces. */
static uint64_t mulhi32(uint64_t h, uint32_t m) {
    return ((h >> 32) * m + (((h & 0xFFFFFFFFULL) * m) >> 32)) >> 32;
}

static int fuse8_contains(const fuse8 *f, uint64_t key) {
    uint64_t h, h0, h1, h2, mask = f->segment_length - 1;
    if (f->size == 0) return 0;
    h = mix64(key + f->seed);
    h0 = mulhi32(h, f->segment_count * f->segment_length);
    h1 = (h0 + f->segment_length) ^ ((h >> 18) & mask);
    h2 = (h0 + 2 * (uint64_t)f->segment_length) ^ (h & mask);
    return (uint8_t)(h ^ (h >> 32)) ==
           (uint8_t)(f->fingerprints[h0] ^ f->fingerprints[h1] ^ f->fingerprints[h2]);
}

/* ------------------------------------------------------------------------ the file */
typedef struct {
    uint32_t publisher;
    uint64_t version;
    int64_t fresh_at;
    uint32_t region_count;
    const unsigned char *regions; /* region_count big-endian u32, ascending */
    fuse8 cards, psams;
    const unsigned char *body_digest;
} partition;

typedef struct {
    char scope[7];
    int64_t issued_at, expires_at, fresh_at;
    uint32_t signer, count;
    unsigned char header_digest[32];
    partition *parts;
} filter_file;

typedef struct {
    const unsigned char *p;
    size_t left;
    const char *error;
} cursor;

static int take(cursor *c, size_t n, const unsigned char **out) {
    if (c->error) return 0;
    if (n > c->left) {
        c->error = "truncated";
        return 0;
    }
    *out = c->p;
    c->p += n;
    c->left -= n;
    return 1;
}
static uint64_t be(cursor *c, size_t n) {
    const unsigned char *p;
    uint64_t v = 0;
    size_t i;
    if (!take(c, n, &p)) return 0;
    for (i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

static const char *read_fuse(cursor *c, fuse8 *f) {
    uint64_t product;
    f->size = (uint32_t)be(c, 4);
    f->seed = be(c, 8);
    f->segment_length = (uint32_t)be(c, 4);
    f->segment_count = (uint32_t)be(c, 4);
    if (c->error) return c->error;
    if (f->segment_length < 1 || f->segment_length > (1u << 18) ||
        (f->segment_length & (f->segment_length - 1)))
        return "segment length is not a power of two <= 2**18";
    product = (uint64_t)f->segment_count * f->segment_length;
    if (f->segment_count < 1 || product >= (1ULL << 32)) return "segment count out of range";
    f->array_length = ((uint64_t)f->segment_count + 2) * f->segment_length;
    return NULL;
}

static const char *parse(const unsigned char *data, size_t n, filter_file *out) {
    cursor c;
    const unsigned char *p;
    unsigned char digest[32];
    uint64_t i, scope_len, links, sig_len, regions, stmt;
    const char *err;
    memset(out, 0, sizeof *out);
    if (n < 32) return "shorter than its trailer";
    sha256(data, n - 32, digest);
    if (memcmp(digest, data + n - 32, 32) != 0)
        return "the SHA-256 trailer does not match: the file is damaged";
    c.p = data; c.left = n - 32; c.error = NULL;
    if (!take(&c, 4, &p) || memcmp(p, "FLTR", 4) != 0) return "not a filter file (bad magic)";
    if (be(&c, 1) != 1) return "unknown format version";
    scope_len = be(&c, 1);
    if (scope_len < 1 || scope_len > 6 || !take(&c, scope_len, &p)) return "bad scope";
    for (i = 0; i < scope_len; i++) {
        if (p[i] < '0' || p[i] > '9') return "scope is not digits";
        out->scope[i] = (char)p[i];
    }
    out->issued_at = (int64_t)be(&c, 8);
    out->expires_at = (int64_t)be(&c, 8);
    if (c.error || out->issued_at < 0 || out->issued_at >= out->expires_at)
        return "issued_at is not before expires_at";
    out->signer = (uint32_t)be(&c, 4);
    if (out->signer > 999999) return "signer code out of range";
    be(&c, 1);                        /* suite */
    take(&c, 8, &p);                  /* key id */
    out->count = (uint32_t)be(&c, 4);
    if (c.error) return c.error;
    if (out->count > 65535) return "too many partitions";
    out->parts = calloc(out->count ? out->count : 1, sizeof(partition));
    if (!out->parts) return "out of memory";
    for (i = 0; i < out->count; i++) {
        partition *q = &out->parts[i];
        q->publisher = (uint32_t)be(&c, 4);
        q->version = be(&c, 8);
        take(&c, 32, &p);             /* head digest */
        q->fresh_at = (int64_t)be(&c, 8);
        stmt = be(&c, 1);
        take(&c, stmt, &p);           /* the publisher's head statement, as signed */
        regions = be(&c, 4);
        if (c.error) return c.error;
        if (regions > 1000000 || regions * 4 > c.left) return "bad region count";
        q->region_count = (uint32_t)regions;
        take(&c, regions * 4, &q->regions);
        if (!c.error) {
            uint64_t j, prev = 0, r;
            for (j = 0; j < regions; j++) {
                const unsigned char *b = q->regions + 4 * j;
                r = (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 8 | b[3];
                if (r > 999999 || (j > 0 && r <= prev)) return "regions are not ascending codes";
                prev = r;
            }
        }
        if ((err = read_fuse(&c, &q->cards)) != NULL) return err;
        if ((err = read_fuse(&c, &q->psams)) != NULL) return err;
        take(&c, 32, &q->body_digest);
        if (c.error) return c.error;
        if (q->publisher > 999999) return "publisher code out of range";
        if (i == 0 || q->fresh_at < out->fresh_at) out->fresh_at = q->fresh_at;
    }
    sha256(data, (size_t)(c.p - data), out->header_digest);
    links = be(&c, 1);
    if (links > 8) return "certificate chain too long";
    for (i = 0; i < links; i++) {
        uint64_t len = be(&c, 4);
        if (len > 4096) return "certificate too long";
        take(&c, len, &p);
    }
    sig_len = be(&c, 1);
    if (!c.error && sig_len < 1) return "unsigned";
    take(&c, sig_len, &p);
    for (i = 0; i < out->count; i++) {
        partition *q = &out->parts[i];
        uint64_t body = q->cards.array_length + q->psams.array_length;
        uint64_t present = be(&c, 1);
        if (c.error) return c.error;
        if (present != 1) return "a partition body is omitted: this is an update, apply it first";
        if (body > c.left) return "truncated";
        take(&c, body, &p);
        sha256(p, body, digest);
        if (memcmp(digest, q->body_digest, 32) != 0) return "a partition body digest mismatch";
        q->cards.fingerprints = p;
        q->psams.fingerprints = p + q->cards.array_length;
    }
    if (c.error) return c.error;
    if (c.left) return "trailing bytes";
    return NULL;
}

/* ---------------------------------------------------------------- ids (blacklist/cardid.py) */
static int is_digit(int ch) { return ch >= '0' && ch <= '9'; }
static int is_hex(int ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}
static int is_alnum(int ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}
static int upper(int ch) { return ch >= 'a' && ch <= 'z' ? ch - 32 : ch; }

/* Province-level prefixes (blacklist/regions.py PROVINCE_PREFIXES). */
static int province(int two) {
    return (two >= 11 && two <= 15) || (two >= 21 && two <= 23) || (two >= 31 && two <= 37) ||
           (two >= 41 && two <= 46) || (two >= 50 && two <= 54) || (two >= 61 && two <= 65);
}

/* Canonical (upper-case) id into out; 0 if malformed. A card: 32 chars, a PSAM: 22. */
static int canonical(const char *s, size_t n, int psam, unsigned char *out) {
    size_t i;
    if (n != (psam ? 22u : 32u)) return 0;
    for (i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        int ok = psam ? (i < 6 ? is_digit(ch) : is_hex(ch))
                      : (i < 6 ? is_digit(ch) : i < 16 ? is_alnum(ch) : is_hex(ch));
        if (!ok) return 0;
        out[i] = (unsigned char)upper(ch);
    }
    return province((out[0] - '0') * 10 + (out[1] - '0'));
}

static int holds_region(const partition *q, uint32_t region) {
    uint32_t lo = 0, hi = q->region_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const unsigned char *p = q->regions + 4 * (size_t)mid;
        uint32_t r = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (r == region) return 1;
        if (r < region) lo = mid + 1; else hi = mid;
    }
    return 0;
}

static const char *check(const filter_file *f, const char *id, size_t n, int psam,
                         int64_t now, uint32_t *publisher) {
    unsigned char canon[32];
    uint32_t region = 0, i;
    uint64_t key;
    *publisher = 0xFFFFFFFFu;
    if (!canonical(id, n, psam, canon)) return "MALFORMED";
    if (now >= f->expires_at) return "EXPIRED";
    if (strncmp((const char *)canon, f->scope, strlen(f->scope)) != 0) return "OUT_OF_SCOPE";
    for (i = 0; i < 6; i++) region = region * 10 + (uint32_t)(canon[i] - '0');
    key = xxh64(canon, n);
    for (i = 0; i < f->count; i++) {
        const partition *q = &f->parts[i];
        if (holds_region(q, region) && fuse8_contains(psam ? &q->psams : &q->cards, key)) {
            *publisher = q->publisher;
            return "MAYBE_REVOKED";
        }
    }
    return "NOT_REVOKED";
}

/* ------------------------------------------------------------------------ main */
static unsigned char *read_file(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    unsigned char *buf = NULL;
    long size;
    if (!fp) return NULL;
    if (fseek(fp, 0, SEEK_END) == 0 && (size = ftell(fp)) >= 0 && fseek(fp, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)size + 1);
        if (buf && fread(buf, 1, (size_t)size, fp) != (size_t)size) {
            free(buf);
            buf = NULL;
        }
        *n = (size_t)size;
    }
    fclose(fp);
    return buf;
}

int main(int argc, char **argv) {
    filter_file f;
    unsigned char *data;
    size_t n = 0;
    const char *err;
    char line[4096];
    int64_t now = 0;
    int i;
    if (argc < 3 || (strcmp(argv[1], "info") != 0 && strcmp(argv[1], "check") != 0) ||
        (strcmp(argv[1], "check") == 0 && argc != 4)) {
        fprintf(stderr, "usage: %s info FILE | check FILE NOW < ids\n", argv[0]);
        return 1;
    }
    if (argc == 4) {
        char *end = NULL;
        now = strtoll(argv[3], &end, 10);
        if (end == argv[3] || *end != '\0') {
            fprintf(stderr, "error: NOW must be unix seconds, got %s\n", argv[3]);
            return 1;
        }
    }
    data = read_file(argv[2], &n);
    if (!data) {
        fprintf(stderr, "error: cannot read %s\n", argv[2]);
        return 2;
    }
    if ((err = parse(data, n, &f)) != NULL) {
        fprintf(stderr, "error: %s: %s\n", argv[2], err);
        free(f.parts);
        free(data);
        return 2;
    }
    if (strcmp(argv[1], "info") == 0) {
        printf("scope %s\nissued_at %lld\nexpires_at %lld\nfresh_at %lld\nsigner %06u\n",
               f.scope, (long long)f.issued_at, (long long)f.expires_at,
               (long long)f.fresh_at, (unsigned)f.signer);
        printf("partitions %u\nheader_sha256 ", (unsigned)f.count);
        for (i = 0; i < 32; i++) printf("%02x", f.header_digest[i]);
        printf("\n");
        for (i = 0; i < (int)f.count; i++)
            printf("partition %06u version %llu fresh_at %lld cards %u psams %u\n",
                   (unsigned)f.parts[i].publisher, (unsigned long long)f.parts[i].version,
                   (long long)f.parts[i].fresh_at, (unsigned)f.parts[i].cards.size,
                   (unsigned)f.parts[i].psams.size);
        free(f.parts);
        free(data);
        return 0;
    }
    {
        while (fgets(line, sizeof line, stdin)) {
            size_t len = strlen(line);
            int psam = 0;
            const char *id = line, *verdict;
            uint32_t publisher;
            if (len && line[len - 1] == '\n') line[--len] = '\0';
            if (len >= 5 && memcmp(line, "psam:", 5) == 0) {
                psam = 1;
                id += 5;
                len -= 5;
            }
            verdict = check(&f, id, len, psam, now, &publisher);
            if (publisher == 0xFFFFFFFFu)
                printf("%s - %lld\n", verdict, (long long)f.fresh_at);
            else
                printf("%s %06u %lld\n", verdict, (unsigned)publisher, (long long)f.fresh_at);
        }
    }
    free(f.parts);
    free(data);
    return 0;
}
