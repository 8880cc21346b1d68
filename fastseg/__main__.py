from fastseg.cli import app

app(prog_name="fastseg")
