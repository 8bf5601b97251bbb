package main

import (
	"fmt"
	"os"
)

// A local fixture standing in for cookiecutter, which lives on a git host this machine cannot reach.
func main() { fmt.Println("cookiecutter fixture", os.Args[1:]) }
