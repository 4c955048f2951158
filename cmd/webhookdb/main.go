// Command webhookdb is the webhookdb server and its command-line client in one binary.
package main

import (
	"os"

	"github.com/webhookdb-go/webhookdb/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
