package main

import (
	"fmt"
	"os"
)

// A local fixture standing in for interceptor, which lives on a git host this machine cannot reach.
func main() { fmt.Println("interceptor fixture", os.Args[1:]) }
