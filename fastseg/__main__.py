from fastseg.cli import app

if __name__ == "__main__":  # not again in the processes that --nproc spawns
    app(prog_name="fastseg")
