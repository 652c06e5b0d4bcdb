/* verify.h - checks an evidence bundle or a chain: shared by the audit
 * plugin (server-side verification) and relay-audit-verify (offline).
 * Depends on libsodium, jansson and libarchive only, not on librelay. */
#ifndef AUDIT_VERIFY_H
#define AUDIT_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_BUNDLE_FORMAT "relay-evidence-bundle/1"

typedef struct audit_verify_result {
        bool ok;
        int64_t entries;     /* entries checked */
        int64_t redacted;    /* of them, present only as hashes */
        int64_t checkpoints; /* signatures checked */
        int64_t first_seq, last_seq;
        int64_t bad_seq; /* the first bad entry, or 0 */
        char bad_id[64];
        char key_id[17];
        char message[256]; /* what is wrong, or a summary */
} audit_verify_result;

/* SHA-256 of DATA as 64 hex digits. */
void audit_sha256_hex(const void *data, size_t len, char out[65]);
/* The hash of an entry: SHA-256 over "relay-audit-v1\n" PREV "\n" BODY_SHA256. */
void audit_entry_hash(const char *prev_hash, const char *body_sha256, char out[65]);
/* The statements the key signs. */
void audit_checkpoint_statement(char *out, size_t len, const char *tenant, int64_t seq, const char *hash,
                                int64_t time_ms);
void audit_receipt_statement(char *out, size_t len, const char *tenant, int64_t seq, const char *hash);
/* Checks a base64 Ed25519 signature of MSG with the raw 32-byte key PK. */
bool audit_signature_ok(const unsigned char pk[32], const char *msg, size_t len, const char *sig_b64);
/* Decodes a base64 public key; false unless it is 32 bytes. */
bool audit_public_key_decode(const char *b64, unsigned char pk[32]);

/* Verifies the tar.gz bundle DATA against the trusted public key PK (raw
 * 32 bytes).  R says what was found; R->ok only when everything holds. */
void audit_verify_bundle(const void *data, size_t len, const unsigned char pk[32], audit_verify_result *r);

#endif
