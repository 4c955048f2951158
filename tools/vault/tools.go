//go:build tools

// Package tools pins the Vault server module so `go build github.com/hashicorp/vault` resolves.
package tools

import _ "github.com/hashicorp/vault"
