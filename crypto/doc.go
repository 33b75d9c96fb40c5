// Package crypto is phiproxy's cryptographic core: envelope encryption of
// column values (AES-256-GCM), blind indexes (HMAC-SHA-256), key derivation
// (HKDF-SHA-256), the keyring of data keys and the key providers that wrap
// them (a local master key here, AWS KMS in crypto/awskms).
//
// It imports nothing else of phiproxy, so any Go program can use it to
// decrypt an export. FORMAT.md documents every byte, label and derivation,
// with test vectors; testdata/vectors.json freezes them.
//
// # Values
//
// A Keyring is opened once at startup from its file and a Provider; it
// unwraps the data keys and keeps them in memory only. (*Keyring).Cipher
// returns the ColumnCipher of one column identity ("schema.table.column"),
// whose Seal/SealText/Open append to a caller's buffer and allocate nothing
// when it has room. Each data key is specialised to each column by HKDF, and
// the associated data binds the format version, the key id and the column
// identity, so a ciphertext copied into another column does not decrypt.
//
// # Blind indexes
//
// (*Keyring).Indexer returns the Indexer of an index group: HMAC-SHA-256 of
// the normalized value under a key derived from the blind-index root key (a
// key separate from the data keys) and the group name, truncated to a chosen
// number of bits. With no normalizer it is a column's exact index.
// (*Keyring).NormalizedIndexer returns the indexer of a normalized index,
// keyed by the group and the normalizers together, so that it shares index
// values with no exact index (FORMAT.md, "Normalized indexes").
//
// # Key management
//
// Exactly one data key is active and seals; decrypt-only keys still open;
// retired keys are kept wrapped in the file but never unwrapped. Rotation
// adds a new active key at once; rewrapping changes only the wrapped form of
// the keys, never a value. Providers are called only when a keyring is
// created, opened, rotated or rewrapped: never per value.
//
// # What it refuses
//
// It refuses keyring and master-key files that group or others can access,
// keyrings without exactly one active key, unknown normalizers, and
// envelopes of other versions. Errors never contain values or keys; a failed
// decryption is one generic *DecryptError naming the column and key id.
// Types holding keys print "[REDACTED]" through fmt and log/slog.
//
// # Backwards compatibility
//
// Envelope version 1, the text prefix "phi1:", the derivation labels and the
// keyring format "phiproxy-keyring/v1" are frozen by known-answer tests. A
// change means a new version byte or label, with the old one still read.
package crypto
