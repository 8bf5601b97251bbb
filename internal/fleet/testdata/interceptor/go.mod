module example.com/interceptor

go 1.22
