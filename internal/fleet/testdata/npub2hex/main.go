package main

import (
	"fmt"
	"os"
)

// A local fixture standing in for npub2hex, which lives on a git host this machine cannot reach.
func main() { fmt.Println("npub2hex fixture", os.Args[1:]) }
