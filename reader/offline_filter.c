/*
 * Reference reader of the signed offline filter (issue #16), for terminal vendors to port.
 * One file, C99, no dependency beyond the C library. The layout is written down in
 * blacklist/filters/offline.py (and README.md, "Offline filter for POS"); this file
 * follows it field by field.
 *
 * What it verifies:
 *   INTEGRITY, always:
 *   - the trailer: SHA-256 of every byte before the last 32 equals those 32 bytes;
 *   - the structure: every length is bounded by the bytes present, every field in range,
 *     no trailing bytes;
 *   - every partition body's SHA-256 equals the body_digest in the (signed) header.
 *   AUTHENTICITY, when given the pinned root's Ed25519 public key (ROOT_PUBLIC_HEX):
 *   - the certificate chain in the file, link by link from the root (X.509 certificates of
 *     the blacklist/x509certs.py profile, or the older binary layout of
 *     blacklist/certs_binary.py; blacklist/chainverify.py rules): issuer key id, the
 *     issuer's Ed25519 signature (over the DER TBS for X.509, over SHA-256 of the body for
 *     the binary layout), not_before <= issued_at <= not_after
 *     and NOW <= not_after, scope within the issuer's, and a key for another publisher only
 *     for strictly narrower prefixes;
 *   - the leaf is the header's key and is certified for a prefix of the filter's scope (the
 *     root signs any scope);
 *   - its Ed25519 signature (RFC 8032 5.1.7, checked as OpenSSL does: S < L, A decodes,
 *     [S]B - [k]A encodes to R) over SHA-256(header).
 *   Not here: SM2 signatures (refused: "Ed25519 only"; the Python reader verifies them) and
 *   key revocations (the file carries none; neither reader knows of them offline: a
 *   filter's life is bounded by expires_at and the certificates' not_after).
 *   Without ROOT_PUBLIC_HEX a terminal must have the signature checked some other way
 *   (blacklist.filters.offline.verify, or the gateway that loads the file).
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
 *   offline_filter check FILE NOW [ROOT_PUBLIC_HEX]
 *                                         ids on stdin, one per line ("psam:ID" for a
 *                                         PSAM); one answer per line on stdout:
 *                                         VERDICT PUBLISHER|- FRESH_AT
 *                                         (with the root: only after the file verified)
 * Exit status: 0 answered, 2 the file is refused (damaged, or "not authentic": the reason
 * on stderr), 1 usage.
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
    uint32_t signer, count, chain_count;
    int suite;
    const unsigned char *key_id;
    size_t chain_offset, sig_offset, sig_len; /* offsets into the file's bytes */
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
    out->suite = (int)be(&c, 1);
    take(&c, 8, &out->key_id);
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
    out->chain_count = (uint32_t)links;
    out->chain_offset = (size_t)(c.p - data);
    for (i = 0; i < links; i++) {
        uint64_t len = be(&c, 4);
        if (len > 4096) return "certificate too long";
        take(&c, len, &p);
    }
    sig_len = be(&c, 1);
    if (!c.error && sig_len < 1) return "unsigned";
    out->sig_offset = (size_t)(c.p - data);
    out->sig_len = (size_t)sig_len;
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

/* ----------------------------------------------- SHA-512 (FIPS 180-4), for Ed25519 only */
static const uint64_t K512[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL,
    0xe9b5dba58189dbbcULL, 0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL,
    0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL, 0xd807aa98a3030242ULL,
    0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL,
    0xc19bf174cf692694ULL, 0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL,
    0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL, 0x2de92c6f592b0275ULL,
    0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL,
    0xbf597fc7beef0ee4ULL, 0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL,
    0x06ca6351e003826fULL, 0x142929670a0e6e70ULL, 0x27b70a8546d22ffcULL,
    0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL,
    0x92722c851482353bULL, 0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL,
    0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL, 0xd192e819d6ef5218ULL,
    0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL,
    0x34b0bcb5e19b48a8ULL, 0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL,
    0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL, 0x748f82ee5defb2fcULL,
    0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL,
    0xc67178f2e372532bULL, 0xca273eceea26619cULL, 0xd186b8c721c0c207ULL,
    0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL, 0x06f067aa72176fbaULL,
    0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL,
    0x431d67c49c100d4cULL, 0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL,
    0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL};
static const uint64_t H512[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL,
    0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};

static uint64_t ror64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static void sha512_block(uint64_t h[8], const unsigned char *p) {
    uint64_t w[80], v[8], t1, t2;
    int i, j;
    for (i = 0; i < 16; i++)
        for (w[i] = 0, j = 0; j < 8; j++) w[i] = w[i] << 8 | p[8 * i + j];
    for (i = 16; i < 80; i++) {
        uint64_t s0 = ror64(w[i - 15], 1) ^ ror64(w[i - 15], 8) ^ (w[i - 15] >> 7);
        uint64_t s1 = ror64(w[i - 2], 19) ^ ror64(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, h, sizeof v);
    for (i = 0; i < 80; i++) {
        t1 = v[7] + (ror64(v[4], 14) ^ ror64(v[4], 18) ^ ror64(v[4], 41)) +
             ((v[4] & v[5]) ^ (~v[4] & v[6])) + K512[i] + w[i];
        t2 = (ror64(v[0], 28) ^ ror64(v[0], 34) ^ ror64(v[0], 39)) +
             ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (i = 0; i < 8; i++) h[i] += v[i];
}

/* SHA-512 of the concatenation a || b || c (what Ed25519 hashes: R || A || message). */
static void sha512_3(const unsigned char *a, size_t na, const unsigned char *b, size_t nb,
                     const unsigned char *c, size_t nc, unsigned char out[64]) {
    uint64_t h[8];
    unsigned char block[128];
    size_t used = 0, total = na + nb + nc, i;
    const unsigned char *parts[3];
    size_t sizes[3];
    int k;
    parts[0] = a; parts[1] = b; parts[2] = c;
    sizes[0] = na; sizes[1] = nb; sizes[2] = nc;
    memcpy(h, H512, sizeof h);
    for (k = 0; k < 3; k++)
        for (i = 0; i < sizes[k]; i++) {
            block[used++] = parts[k][i];
            if (used == 128) {
                sha512_block(h, block);
                used = 0;
            }
        }
    block[used++] = 0x80;
    if (used > 112) {
        memset(block + used, 0, 128 - used);
        sha512_block(h, block);
        used = 0;
    }
    memset(block + used, 0, 128 - used);
    for (i = 0; i < 8; i++) block[120 + i] = (unsigned char)(((uint64_t)total * 8) >> (56 - 8 * i));
    sha512_block(h, block);
    for (i = 0; i < 64; i++) out[i] = (unsigned char)(h[i / 8] >> (56 - 8 * (i % 8)));
}

/* ------------------------------------------ Ed25519 verification (RFC 8032, section 5.1) */
/* A field element mod p = 2**255 - 19: 16 signed limbs of 16 bits, little-endian; values
 * are kept small enough that products fit in int64. Verification handles public data only,
 * so nothing here needs to run in constant time. */
typedef int64_t fe[16];
static const unsigned char D_BYTES[32] = {0xa3, 0x78, 0x59, 0x13, 0xca, 0x4d, 0xeb, 0x75, 0xab, 0xd8, 0x41, 0x41, 0x4d, 0x0a, 0x70, 0x00, 0x98, 0xe8, 0x79, 0x77, 0x79, 0x40, 0xc7, 0x8c, 0x73, 0xfe, 0x6f, 0x2b, 0xee, 0x6c, 0x03, 0x52};
static const unsigned char I_BYTES[32] = {0xb0, 0xa0, 0x0e, 0x4a, 0x27, 0x1b, 0xee, 0xc4, 0x78, 0xe4, 0x2f, 0xad, 0x06, 0x18, 0x43, 0x2f, 0xa7, 0xd7, 0xfb, 0x3d, 0x99, 0x00, 0x4d, 0x2b, 0x0b, 0xdf, 0xc1, 0x4f, 0x80, 0x24, 0x83, 0x2b};
static const unsigned char L_BYTES[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};

static fe FE_D, FE_D2, FE_I;

static int64_t floor_shift16(int64_t v) { return v >= 0 ? v >> 16 : -((-v + 65535) >> 16); }

static void fe_carry(fe o) {
    int i;
    for (i = 0; i < 16; i++) {
        int64_t c = floor_shift16(o[i]);
        o[i] -= c * 65536;
        if (i < 15) o[i + 1] += c; else o[0] += 38 * c; /* 2**256 = 38 (mod p) */
    }
}
static void fe_copy(fe o, const fe a) { memcpy(o, a, sizeof(fe)); }
static void fe_set(fe o, int64_t v) { memset(o, 0, sizeof(fe)); o[0] = v; }
static void fe_add(fe o, const fe a, const fe b) { int i; for (i = 0; i < 16; i++) o[i] = a[i] + b[i]; }
static void fe_sub(fe o, const fe a, const fe b) { int i; for (i = 0; i < 16; i++) o[i] = a[i] - b[i]; }
static void fe_mul(fe o, const fe a, const fe b) {
    int64_t t[31];
    int i, j;
    memset(t, 0, sizeof t);
    for (i = 0; i < 16; i++)
        for (j = 0; j < 16; j++) t[i + j] += a[i] * b[j];
    for (i = 0; i < 15; i++) t[i] += 38 * t[i + 16];
    for (i = 0; i < 16; i++) o[i] = t[i];
    fe_carry(o);
    fe_carry(o);
}
static void fe_sq(fe o, const fe a) { fe_mul(o, a, a); }

/* The canonical 32 bytes (value reduced below p). */
static void fe_pack(unsigned char out[32], const fe a) {
    fe t, m;
    int i, k;
    fe_copy(t, a);
    for (;;) { /* until every limb is in [0, 2**16) */
        int ok = 1;
        fe_carry(t);
        for (i = 0; i < 16; i++) if (t[i] < 0 || t[i] > 65535) ok = 0;
        if (ok) break;
    }
    for (k = 0; k < 2; k++) { /* the value is below 2**256 < 3p: subtract p at most twice */
        int64_t borrow = 0;
        for (i = 0; i < 16; i++) {
            int64_t limb = i == 0 ? 0xffed : i == 15 ? 0x7fff : 0xffff;
            int64_t v = t[i] - limb - borrow;
            borrow = v < 0;
            m[i] = v + borrow * 65536;
        }
        if (!borrow) fe_copy(t, m);
    }
    for (i = 0; i < 16; i++) {
        out[2 * i] = (unsigned char)(t[i] & 0xff);
        out[2 * i + 1] = (unsigned char)(t[i] >> 8);
    }
}
static void fe_unpack(fe o, const unsigned char in[32]) {
    int i;
    for (i = 0; i < 16; i++) o[i] = in[2 * i] | (int64_t)in[2 * i + 1] << 8;
    o[15] &= 0x7fff;
}
static int fe_equal(const fe a, const fe b) {
    unsigned char x[32], y[32];
    fe_pack(x, a);
    fe_pack(y, b);
    return memcmp(x, y, 32) == 0;
}
static int fe_parity(const fe a) { unsigned char x[32]; fe_pack(x, a); return x[0] & 1; }
static int fe_is_zero(const fe a) { fe z; fe_set(z, 0); return fe_equal(a, z); }

/* a**(2**255 - 21) = 1/a: square-and-multiply over the exponent's bits (all ones but 2, 4). */
static void fe_invert(fe o, const fe a) {
    fe c;
    int bit;
    fe_copy(c, a);
    for (bit = 253; bit >= 0; bit--) {
        fe_sq(c, c);
        if (bit != 2 && bit != 4) fe_mul(c, c, a);
    }
    fe_copy(o, c);
}
/* a**((p - 5) / 8) = a**(2**252 - 3) (all ones but bit 1): for square roots. */
static void fe_pow2523(fe o, const fe a) {
    fe c;
    int bit;
    fe_copy(c, a);
    for (bit = 250; bit >= 0; bit--) {
        fe_sq(c, c);
        if (bit != 1) fe_mul(c, c, a);
    }
    fe_copy(o, c);
}

/* Points in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, x*y = T/Z (section 5.1.4). */
typedef struct { fe x, y, z, t; } point;

static void point_add(point *r, const point *p, const point *q) {
    fe a, b, c, d, e, f, g, h, t;
    fe_sub(a, p->y, p->x); fe_sub(t, q->y, q->x); fe_mul(a, a, t);
    fe_add(b, p->y, p->x); fe_add(t, q->y, q->x); fe_mul(b, b, t);
    fe_mul(c, p->t, q->t); fe_mul(c, c, FE_D2);
    fe_mul(d, p->z, q->z); fe_add(d, d, d);
    fe_sub(e, b, a); fe_sub(f, d, c); fe_add(g, d, c); fe_add(h, b, a);
    fe_mul(r->x, e, f); fe_mul(r->y, g, h); fe_mul(r->t, e, h); fe_mul(r->z, f, g);
}

/* [k]p for a 32-byte little-endian scalar, double-and-add (the formula is unified). */
static void point_mul(point *r, const unsigned char k[32], const point *p) {
    point q;
    int bit;
    fe_set(q.x, 0); fe_set(q.y, 1); fe_set(q.z, 1); fe_set(q.t, 0);
    for (bit = 255; bit >= 0; bit--) {
        point_add(&q, &q, &q);
        if ((k[bit / 8] >> (bit % 8)) & 1) point_add(&q, &q, p);
    }
    *r = q;
}

static void point_encode(unsigned char out[32], const point *p) {
    fe zi, x, y;
    fe_invert(zi, p->z);
    fe_mul(x, p->x, zi);
    fe_mul(y, p->y, zi);
    fe_pack(out, y);
    out[31] ^= (unsigned char)(fe_parity(x) << 7);
}

/* Section 5.1.3; 0 if the bytes are not a point (non-canonical y, no square root). */
static int point_decode(point *p, const unsigned char in[32]) {
    fe u, v, v3, vx2, t, one;
    unsigned char check[32], y_bytes[32];
    int sign = in[31] >> 7;
    memcpy(y_bytes, in, 32);
    y_bytes[31] &= 0x7f;
    fe_unpack(p->y, y_bytes);
    fe_pack(check, p->y);
    if (memcmp(check, y_bytes, 32) != 0) return 0; /* y >= p */
    fe_set(one, 1);
    fe_set(p->z, 1);
    fe_sq(u, p->y);
    fe_mul(v, u, FE_D);
    fe_sub(u, u, one);          /* u = y^2 - 1 */
    fe_add(v, v, one);          /* v = d y^2 + 1 */
    fe_sq(v3, v); fe_mul(v3, v3, v);            /* v^3 */
    fe_sq(t, v3); fe_mul(t, t, v); fe_mul(t, t, u); /* u v^7 */
    fe_pow2523(t, t);
    fe_mul(t, t, v3); fe_mul(p->x, t, u);       /* x = u v^3 (u v^7)^((p-5)/8) */
    fe_sq(vx2, p->x); fe_mul(vx2, vx2, v);
    if (!fe_equal(vx2, u)) {
        fe neg;
        fe_set(neg, 0);
        fe_sub(neg, neg, u);
        if (!fe_equal(vx2, neg)) return 0;
        fe_mul(p->x, p->x, FE_I);
    }
    if (fe_is_zero(p->x) && sign) return 0;
    if (fe_parity(p->x) != sign) {
        fe z;
        fe_set(z, 0);
        fe_sub(p->x, z, p->x);
    }
    fe_mul(p->t, p->x, p->y);
    return 1;
}

/* h mod L for a 64-byte little-endian h, bit by bit (r < L < 2**253 fits 8 limbs). */
static void reduce_mod_l(unsigned char out[32], const unsigned char h[64]) {
    uint32_t r[9], l[9];
    int bit, i;
    memset(r, 0, sizeof r);
    memset(l, 0, sizeof l);
    for (i = 0; i < 32; i++) l[i / 4] |= (uint32_t)L_BYTES[i] << (8 * (i % 4));
    for (bit = 511; bit >= 0; bit--) {
        uint64_t carry = (h[bit / 8] >> (bit % 8)) & 1, borrow = 0;
        uint32_t m[9];
        for (i = 0; i < 9; i++) {
            uint64_t v = ((uint64_t)r[i] << 1) | carry;
            carry = v >> 32;
            r[i] = (uint32_t)v;
        }
        for (i = 0; i < 9; i++) { /* m = r - l; keep it when there is no borrow */
            uint64_t v = (uint64_t)r[i] - l[i] - borrow;
            borrow = (v >> 63) & 1;
            m[i] = (uint32_t)v;
        }
        if (!borrow) memcpy(r, m, sizeof r);
    }
    for (i = 0; i < 32; i++) out[i] = (unsigned char)(r[i / 4] >> (8 * (i % 4)));
}

static int scalar_below_l(const unsigned char s[32]) {
    int i;
    for (i = 31; i >= 0; i--) {
        if (s[i] < L_BYTES[i]) return 1;
        if (s[i] > L_BYTES[i]) return 0;
    }
    return 0;
}

static point BASE;

static void ed25519_init(void) {
    static const unsigned char base_y[32] = {
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};
    fe_unpack(FE_D, D_BYTES);
    fe_add(FE_D2, FE_D, FE_D);
    fe_unpack(FE_I, I_BYTES);
    point_decode(&BASE, base_y);
}

/* RFC 8032 5.1.7, as OpenSSL checks it: S < L, A decodes, and the encoding of
 * [S]B - [k]A is exactly R, with k = SHA-512(R || A || message) mod L. */
static int ed25519_verify(const unsigned char pub[32], const unsigned char *msg, size_t n,
                          const unsigned char sig[64]) {
    point a, sb, ka, r;
    unsigned char h[64], k[32], enc[32];
    fe z;
    if (!scalar_below_l(sig + 32) || !point_decode(&a, pub)) return 0;
    sha512_3(sig, 32, pub, 32, msg, n, h);
    reduce_mod_l(k, h);
    fe_set(z, 0);
    fe_sub(a.x, z, a.x); /* -A */
    fe_sub(a.t, z, a.t);
    point_mul(&sb, sig + 32, &BASE);
    point_mul(&ka, k, &a);
    point_add(&r, &sb, &ka);
    point_encode(enc, &r);
    return memcmp(enc, sig, 32) == 0;
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

/* -------------------------------- the signer's chain from the pinned root (blacklist/certs.py,
 * blacklist/chainverify.py rules 1-4 and 6; key revocations are not in the file, as the
 * Python reader's verify() by default). Ed25519 (suite 1) only: an SM2 chain is refused here.
 * A certificate is either the binary layout (blacklist/certs_binary.py, magic KCRT) or the
 * X.509 profile of blacklist/x509certs.py (issue #14), told apart by the first byte. */
typedef struct {
    int x509; /* 1: body is the DER TBSCertificate, signed as it is (not its SHA-256) */
    uint32_t publisher;
    int suite;
    const unsigned char *pub;
    size_t pub_len;
    int prefix_count;
    char prefixes[255][7];
    int64_t not_before, not_after;
    const unsigned char *issuer_key_id;
    const unsigned char *body;
    size_t body_len;
    const unsigned char *sig;
    size_t sig_len;
} certificate;

static const char *parse_certificate(const unsigned char *p, size_t n, certificate *c) {
    cursor r;
    const unsigned char *q;
    uint64_t len = 0;
    int i, shift;
    r.p = p; r.left = n; r.error = NULL;
    c->x509 = 0;
    if (!take(&r, 4, &q) || memcmp(q, "KCRT", 4) != 0) return "a certificate: bad magic";
    if (be(&r, 1) != 1) return "a certificate: unknown format";
    be(&r, 8); /* serial */
    c->publisher = (uint32_t)be(&r, 4);
    c->suite = (int)be(&r, 1);
    c->pub_len = (size_t)be(&r, 1);
    if (!r.error && (c->suite < 1 || c->suite > 2 || c->pub_len < 1))
        return "a certificate: unknown suite or empty key";
    take(&r, c->pub_len, &c->pub);
    c->prefix_count = (int)be(&r, 1);
    if (r.error) return "a certificate: truncated";
    if (c->publisher > 999999 || c->prefix_count < 1) return "a certificate: bad publisher or scope";
    for (i = 0; i < c->prefix_count; i++) {
        uint64_t k, plen = be(&r, 1);
        if (r.error || plen < 1 || plen > 6 || !take(&r, plen, &q)) return "a certificate: bad prefix";
        for (k = 0; k < plen; k++) {
            if (!is_digit(q[k])) return "a certificate: prefix not digits";
            c->prefixes[i][k] = (char)q[k];
        }
        c->prefixes[i][plen] = '\0';
        if (i > 0 && strcmp(c->prefixes[i - 1], c->prefixes[i]) >= 0)
            return "a certificate: prefixes not in canonical order";
    }
    c->not_before = (int64_t)be(&r, 8);
    c->not_after = (int64_t)be(&r, 8);
    take(&r, 8, &c->issuer_key_id);
    if (r.error) return "a certificate: truncated";
    if (c->not_before > c->not_after) return "a certificate: not_before after not_after";
    c->body = p;
    c->body_len = n - r.left;
    for (shift = 0;; shift += 7) { /* the signature's uvarint length */
        uint64_t byte = be(&r, 1);
        if (r.error || shift > 63) return "a certificate: bad signature length";
        len |= (byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            if (byte == 0 && shift) return "a certificate: padded signature length";
            break;
        }
    }
    c->sig_len = (size_t)len;
    if (len > r.left || !take(&r, c->sig_len, &c->sig)) return "a certificate: truncated signature";
    if (r.left) return "a certificate: trailing bytes";
    return NULL;
}

/* -- the X.509 profile (blacklist/x509certs.py), DER (X.690 10): definite, shortest lengths */
static int der_next(cursor *r, int *tag, cursor *inner) {
    uint64_t first, n = 0;
    size_t i, width;
    const unsigned char *content;
    *tag = (int)be(r, 1);
    first = be(r, 1);
    if (r->error) return 0;
    if (first < 0x80) {
        n = first;
    } else {
        width = (size_t)(first & 0x7f);
        if (width == 0 || width > 4) { r->error = "bad DER length"; return 0; }
        for (i = 0; i < width; i++) n = n << 8 | be(r, 1);
        if (r->error) return 0;
        if (n < 0x80 || (width > 1 && n < ((uint64_t)1 << (8 * (width - 1))))) {
            r->error = "DER length not in its shortest form";
            return 0;
        }
    }
    if (!take(r, (size_t)n, &content)) return 0;
    inner->p = content; inner->left = (size_t)n; inner->error = NULL;
    return 1;
}

static int der_expect(cursor *r, int tag, cursor *inner) {
    int got;
    if (!der_next(r, &got, inner)) return 0;
    if (got != tag) { r->error = "unexpected DER tag"; return 0; }
    return 1;
}

static int same(const cursor *c, const unsigned char *bytes, size_t n) {
    return c->left == n && memcmp(c->p, bytes, n) == 0;
}

/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil) */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* UTCTime YYMMDDHHMMSSZ (1950..2049) or GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5) */
static int der_time(cursor *r, int64_t *out) {
    int tag;
    cursor t;
    size_t i, digits;
    int64_t v[7], y;
    if (!der_next(r, &tag, &t)) return 0;
    digits = tag == 0x17 ? 12 : tag == 0x18 ? 14 : 0;
    if (!digits || t.left != digits + 1 || t.p[digits] != 'Z') return 0;
    for (i = 0; i < digits; i++)
        if (!is_digit(t.p[i])) return 0;
    for (i = 0; i < digits / 2; i++) v[i] = (t.p[2 * i] - '0') * 10 + (t.p[2 * i + 1] - '0');
    if (tag == 0x17) {
        y = v[0] < 50 ? 2000 + v[0] : 1900 + v[0];
        memmove(v, v + 1, 5 * sizeof v[0]);
    } else {
        y = v[0] * 100 + v[1];
        memmove(v, v + 2, 5 * sizeof v[0]);
    }
    if (v[0] < 1 || v[0] > 12 || v[1] < 1 || v[1] > 31 || v[2] > 23 || v[3] > 59 || v[4] > 59)
        return 0;
    *out = days_from_civil(y, v[0], v[1]) * 86400 + v[2] * 3600 + v[3] * 60 + v[4];
    return 1;
}

static const unsigned char ALG_ED25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
static const unsigned char OID_AKI[] = {0x06, 0x03, 0x55, 0x1d, 0x23};
static const unsigned char OID_SKI[] = {0x06, 0x03, 0x55, 0x1d, 0x0e};
static const unsigned char OID_BASIC[] = {0x06, 0x03, 0x55, 0x1d, 0x13};
static const unsigned char OID_KEY_USAGE[] = {0x06, 0x03, 0x55, 0x1d, 0x0f};
static const unsigned char OID_SCOPE[] = { /* x509certs.SCOPE_OID, 2.25.<uuid>.1 */
    0x06, 0x15, 0x69, 0x82, 0x85, 0xb0, 0x81, 0xcb, 0xef, 0xa3, 0x8a, 0xa2, 0xa7, 0xac,
    0xcf, 0xfb, 0xcd, 0xa4, 0x9d, 0x89, 0x9d, 0x2a, 0x01};

static const char *parse_scope(cursor *value, certificate *c) {
    cursor s, pub, list, prefix;
    size_t k;
    if (!der_expect(value, 0x30, &s) || value->left || !der_expect(&s, 0x12, &pub) ||
        pub.left != 6 || !der_expect(&s, 0x30, &list) || s.left)
        return "a certificate: malformed region scope";
    for (k = 0; k < 6; k++) {
        if (!is_digit(pub.p[k])) return "a certificate: publisher not digits";
        c->publisher = c->publisher * 10 + (uint32_t)(pub.p[k] - '0');
    }
    for (c->prefix_count = 0; list.left; c->prefix_count++) {
        if (c->prefix_count == 255 || !der_expect(&list, 0x12, &prefix) || prefix.left < 1 ||
            prefix.left > 6)
            return "a certificate: bad prefix";
        for (k = 0; k < prefix.left; k++) {
            if (!is_digit(prefix.p[k])) return "a certificate: prefix not digits";
            c->prefixes[c->prefix_count][k] = (char)prefix.p[k];
        }
        c->prefixes[c->prefix_count][prefix.left] = '\0';
    }
    return c->prefix_count ? NULL : "a certificate: empty scope";
}

static void key_id_of(int suite, const unsigned char *pub, size_t n, unsigned char out[8]);

static const char *parse_x509_certificate(const unsigned char *p, size_t n, certificate *c) {
    cursor top, cert, tbs, part, spki, exts, ext, oid, value, flag;
    int tag, critical, have_scope = 0, have_aki = 0;
    const char *err;
    top.p = p; top.left = n; top.error = NULL;
    memset(c, 0, sizeof *c);
    c->x509 = 1;
    if (!der_expect(&top, 0x30, &cert) || top.left) return "a certificate: not one DER SEQUENCE";
    c->body = cert.p;
    if (!der_expect(&cert, 0x30, &tbs)) return "a certificate: no TBS";
    c->body_len = (size_t)(tbs.p + tbs.left - c->body);
    if (!der_expect(&cert, 0x30, &part) || !same(&part, ALG_ED25519, sizeof ALG_ED25519))
        return "a certificate: not signed with Ed25519 (this reader verifies Ed25519 only)";
    if (!der_expect(&cert, 0x03, &part) || part.left != 65 || part.p[0] != 0 || cert.left)
        return "a certificate: malformed signature";
    c->sig = part.p + 1;
    c->sig_len = 64;
    if (!der_expect(&tbs, 0xa0, &part) || !der_expect(&part, 0x02, &value) || part.left ||
        value.left != 1 || value.p[0] != 2)
        return "a certificate: not a version 3 certificate";
    /* RFC 5280 4.1.2.2: the serial is positive, at most 20 octets */
    if (!der_expect(&tbs, 0x02, &part) || part.left < 1 || part.left > 20 || (part.p[0] & 0x80) ||
        (part.left == 1 && part.p[0] == 0))
        return "a certificate: the serial number is not positive";
    if (!der_expect(&tbs, 0x30, &part) || !same(&part, ALG_ED25519, sizeof ALG_ED25519))
        return "a certificate: bad signature algorithm";
    if (!der_expect(&tbs, 0x30, &part) || !der_expect(&tbs, 0x30, &part) ||
        !der_time(&part, &c->not_before) || !der_time(&part, &c->not_after) || part.left)
        return "a certificate: bad validity";
    if (!der_expect(&tbs, 0x30, &part) || !der_expect(&tbs, 0x30, &spki) ||
        !der_expect(&spki, 0x30, &part) || !der_expect(&spki, 0x03, &value) || spki.left ||
        value.left < 2 || value.p[0] != 0)
        return "a certificate: bad subject or key";
    c->suite = same(&part, ALG_ED25519, sizeof ALG_ED25519) ? 1 : 2; /* 2: SM2, not verified */
    c->pub = value.p + 1;
    c->pub_len = value.left - 1;
    if ((c->suite == 1 && c->pub_len != 32) || c->pub_len > 255) return "a certificate: bad key";
    if (!der_expect(&tbs, 0xa3, &part) || tbs.left || !der_expect(&part, 0x30, &exts) || part.left)
        return "a certificate: no extensions";
    while (exts.left) {
        if (!der_expect(&exts, 0x30, &ext) || !der_next(&ext, &tag, &oid) || tag != 0x06)
            return "a certificate: malformed extension";
        oid.p -= 2, oid.left += 2; /* compare with the tag and length, as the constants are */
        critical = 0;
        if (ext.left && ext.p[0] == 0x01) {
            if (!der_expect(&ext, 0x01, &flag) || flag.left != 1 || flag.p[0] != 0xff)
                return "a certificate: bad critical flag";
            critical = 1;
        }
        if (!der_expect(&ext, 0x04, &value) || ext.left) return "a certificate: bad extension";
        if (same(&oid, OID_SCOPE, sizeof OID_SCOPE)) {
            if (!critical) return "a certificate: the region scope is not critical";
            if ((err = parse_scope(&value, c)) != NULL) return err;
            have_scope = 1;
        } else if (same(&oid, OID_AKI, sizeof OID_AKI)) {
            if (!der_expect(&value, 0x30, &part) || !der_expect(&part, 0x80, &flag) || flag.left != 8)
                return "a certificate: authority key identifier is not a key id";
            c->issuer_key_id = flag.p;
            have_aki = 1;
        } else if (same(&oid, OID_SKI, sizeof OID_SKI)) {
            unsigned char id[8]; /* if present, it must be the key's id (x509decode.py) */
            if (!der_expect(&value, 0x04, &flag) || value.left || flag.left != 8)
                return "a certificate: subject key identifier is not a key id";
            key_id_of(c->suite, c->pub, c->pub_len, id);
            if (memcmp(flag.p, id, 8) != 0)
                return "a certificate: the subject key identifier is not the key's id";
        } else if (critical && !same(&oid, OID_BASIC, sizeof OID_BASIC) &&
                   !same(&oid, OID_KEY_USAGE, sizeof OID_KEY_USAGE)) {
            return "a certificate: unknown critical extension";
        }
    }
    if (!have_scope || !have_aki) return "a certificate: no region scope or authority key id";
    if (c->not_before > c->not_after) return "a certificate: not_before after not_after";
    return NULL;
}

static void key_id_of(int suite, const unsigned char *pub, size_t n, unsigned char out[8]) {
    unsigned char buf[256], digest[32];
    buf[0] = (unsigned char)suite;
    memcpy(buf + 1, pub, n);
    sha256(buf, n + 1, digest);
    memcpy(out, digest, 8);
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Within the issuer's scope (NULL: the root's national scope, any province-level code). */
static int within(const char *code, const certificate *scope) {
    int i;
    if (!scope) return strlen(code) >= 2 && province((code[0] - '0') * 10 + (code[1] - '0'));
    for (i = 0; i < scope->prefix_count; i++)
        if (starts_with(code, scope->prefixes[i])) return 1;
    return 0;
}

typedef struct {
    int suite;
    unsigned char pub[32];
    unsigned char key_id[8];
    uint32_t publisher;
    const certificate *cert; /* NULL: the root itself */
} signer_key;

static const char *verify_chain(const filter_file *f, const unsigned char *chain,
                                const unsigned char root[32], int64_t now, signer_key *out) {
    static certificate certs[8];
    const unsigned char *p = chain;
    signer_key issuer;
    uint32_t i;
    char code[7];
    issuer.suite = 1;
    memcpy(issuer.pub, root, 32);
    key_id_of(1, root, 32, issuer.key_id);
    issuer.publisher = 0;
    issuer.cert = NULL;
    for (i = 0; i < f->chain_count; i++) {
        certificate *c = &certs[i];
        unsigned char digest[32];
        size_t len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        const char *err = len && p[4] == 0x30 ? parse_x509_certificate(p + 4, len, c)
                                              : parse_certificate(p + 4, len, c);
        int k;
        p += 4 + len;
        if (err) return err;
        if (memcmp(c->issuer_key_id, issuer.key_id, 8) != 0) return "chain: unknown issuer";
        if (issuer.suite != 1 || c->sig_len != 64) return "chain: not an Ed25519 signature (this reader verifies Ed25519 only)";
        if (c->x509) { /* X.509 signs the TBS itself (RFC 8410) */
            if (!ed25519_verify(issuer.pub, c->body, c->body_len, c->sig))
                return "chain: bad certificate signature";
        } else {
            sha256(c->body, c->body_len, digest);
            if (!ed25519_verify(issuer.pub, digest, 32, c->sig))
                return "chain: bad certificate signature";
        }
        if (f->issued_at < c->not_before) return "chain: a certificate is not yet valid";
        if (f->issued_at > c->not_after || now > c->not_after) return "chain: a certificate expired";
        snprintf(code, sizeof code, "%06u", (unsigned)c->publisher);
        if (!within(code, issuer.cert) && !(issuer.cert == NULL && c->publisher == 0))
            return "chain: scope violation (publisher)";
        for (k = 0; k < c->prefix_count; k++) {
            int narrower = 0, j;
            if (!within(c->prefixes[k], issuer.cert)) return "chain: scope violation (prefix)";
            if (issuer.cert == NULL || c->publisher == issuer.publisher) continue;
            for (j = 0; j < issuer.cert->prefix_count; j++)
                if (starts_with(c->prefixes[k], issuer.cert->prefixes[j]) &&
                    strlen(c->prefixes[k]) > strlen(issuer.cert->prefixes[j]))
                    narrower = 1;
            if (!narrower) return "chain: scope violation (not strictly narrower)";
        }
        if (c->suite != 1 || c->pub_len != 32) {
            issuer.suite = c->suite; /* refused at the next link or at the filter's signature */
            continue;
        }
        memcpy(issuer.pub, c->pub, 32);
        key_id_of(c->suite, c->pub, c->pub_len, issuer.key_id);
        issuer.publisher = c->publisher;
        issuer.cert = c;
    }
    *out = issuer;
    return NULL;
}

/* The filter's authenticity: the chain from the pinned root, the leaf is the header's key,
 * certified for a prefix of the scope, and its Ed25519 signature over SHA-256(header). */
static const char *verify_signature(const filter_file *f, const unsigned char *data,
                                    const unsigned char root[32], int64_t now) {
    signer_key key;
    const char *err;
    int i, allowed = 0;
    if (f->suite != 1) return "the filter is not signed with Ed25519 (this reader verifies Ed25519 only)";
    if ((err = verify_chain(f, data + f->chain_offset, root, now, &key)) != NULL) return err;
    if (key.suite != 1 || memcmp(key.key_id, f->key_id, 8) != 0)
        return "the chain certifies another key than the filter names";
    if (!key.cert) allowed = 1; /* the root signs any scope */
    else
        for (i = 0; i < key.cert->prefix_count; i++)
            if (starts_with(f->scope, key.cert->prefixes[i])) allowed = 1;
    if (!allowed) return "the signer is not certified for the filter's scope";
    if (f->sig_len != 64 || !ed25519_verify(key.pub, f->header_digest, 32, data + f->sig_offset))
        return "the filter's signature does not verify";
    return NULL;
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
    int i, pinned = 0;
    unsigned char root[32];
    if (argc < 3 || (strcmp(argv[1], "info") != 0 && strcmp(argv[1], "check") != 0) ||
        (strcmp(argv[1], "info") == 0 && argc != 3) ||
        (strcmp(argv[1], "check") == 0 && argc != 4 && argc != 5)) {
        fprintf(stderr, "usage: %s info FILE | check FILE NOW [ROOT_PUBLIC_HEX] < ids\n", argv[0]);
        return 1;
    }
    if (argc == 5) { /* the pinned root's raw Ed25519 public key, 64 hex digits */
        for (i = 0; i < 64; i++)
            if (!is_hex((unsigned char)argv[4][i])) break;
        if (i != 64 || argv[4][64] != '\0') {
            fprintf(stderr, "error: ROOT_PUBLIC_HEX must be 64 hex digits\n");
            return 1;
        }
        for (i = 0; i < 32; i++) {
            char byte[3];
            byte[0] = argv[4][2 * i]; byte[1] = argv[4][2 * i + 1]; byte[2] = '\0';
            root[i] = (unsigned char)strtoul(byte, NULL, 16);
        }
        pinned = 1;
    }
    if (argc >= 4) {
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
    if (pinned) {
        ed25519_init();
        if ((err = verify_signature(&f, data, root, now)) != NULL) {
            fprintf(stderr, "error: %s: not authentic: %s\n", argv[2], err);
            free(f.parts);
            free(data);
            return 2;
        }
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
