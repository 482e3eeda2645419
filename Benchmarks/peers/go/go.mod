module gmppeers

go 1.19
