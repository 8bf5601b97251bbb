package main

import (
	"fmt"
	"os"
)

// A local fixture standing in for spamblaster, which lives on a git host this machine cannot reach.
func main() { fmt.Println("spamblaster fixture", os.Args[1:]) }
