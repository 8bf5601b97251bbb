module example.com/cookiecutter

go 1.22
