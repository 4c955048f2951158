package pgroles

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// scramIterations matches PostgreSQL's default (scram_iterations) and Vault's: the count for member logins,
// whose passwords people may copy, paste and keep.
const scramIterations = 4096

// serviceScramIterations is the count for webhookdb's own service logins (the fanout's, Vault's before Vault
// rotates it). PBKDF2's iterations slow the guessing of a low-entropy password from a stolen verifier; these
// passwords are 260 random bits, which no count makes more or less guessable. Every connection pays the
// count in client CPU, and the fanout opens one per org visit: at 4,096 that was 1 ms of the fanout's CPU a
// connection, 37% of its CPU draining into 1,000 orgs.
const serviceScramIterations = 16

// scramVerifier computes the SCRAM-SHA-256 verifier PostgreSQL stores for a password, so the plaintext is
// never sent to the server (or written to its log by log_statement). PostgreSQL accepts a verifier in
// CREATE/ALTER ROLE ... PASSWORD as is. Passwords webhookdb generates are ASCII, which SASLprep leaves alone.
func scramVerifier(password string, iterations int) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("error generating salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", fmt.Errorf("error hashing password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// quoteLiteral quotes a string constant (standard_conforming_strings is on in every supported version).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
