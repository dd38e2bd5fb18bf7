module conntrace/causeclients

go 1.19
