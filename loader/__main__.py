from loader.cli import app

app(prog_name="consolidate")
