from superduperdb.cli import app

app(prog_name='superduperdb')
