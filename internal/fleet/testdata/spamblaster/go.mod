module example.com/spamblaster

go 1.22
