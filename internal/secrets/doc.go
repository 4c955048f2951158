// Package secrets encrypts the secrets webhookdb stores (database URLs, webhook secrets) at the column level.
// Each ciphertext is bound to its table, column and row, so a ciphertext copied into another row or column
// does not decrypt. Two implementations of Box: Transit (Vault's transit engine, one derived key, the binding
// as derivation context: "vault:v<N>:..." ciphertexts) and Keyring (a local AES-256-GCM keyring with
// versioned keys, the binding as associated data: "whdb:v<N>:..."), for self-hosters without Vault.
// Fallback reads both while values move from one to the other.
//
// Rotate re-encrypts every declared encrypted column (EncryptedColumns, RegisterColumn) under the current key
// version in batches, checks none is left behind, then retires the old versions (transit: raises
// min_decryption_version). It refuses to run while the database has an undeclared *_enc column.
package secrets
