package demo

import (
	"berth/internal/testutil"
)

// The HTTP helpers the demo's tests share with internal/haproxy's, under their old names.
var (
	proxyFreeAddr = testutil.FreeAddr
	proxyGet      = testutil.HTTPGet
	expectBody    = testutil.ExpectBody
	proxyLoad     = testutil.HTTPLoad
)

var writeHook = testutil.WriteScript
