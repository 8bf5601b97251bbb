module example.com/npub2hex

go 1.22
