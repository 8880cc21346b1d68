"""Write docs/reference/cli.md from the Typer app itself, so the command reference cannot drift:
`make docs` runs this first, and a test checks the committed page equals what this writes.

Usage: python tools/cli_docs.py [OUT]   (default docs/reference/cli.md)
"""

import sys
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parent.parent
HEADER = """# Command reference

Generated from the command line itself by `tools/cli_docs.py` (`make docs`); every option of every
command, with its default. Exit codes: 0 done, 1 a check failed (a diverged fit, a failed file,
a precision mismatch), 2 bad input or option (one sentence, no traceback), 74 an I/O fault (full
disk, unwritable file), 130 interrupted (Ctrl-C or SIGTERM; `fit` saves a checkpoint first).
"""


def value_type(param, ctx) -> str:
    """The parameter's value type as typer shows it (`display_type`, typer 0.2x), else from click's type
    (older typer on click): a choice's words joined by |, or the type's name."""
    if hasattr(param, "display_type"):
        return param.display_type(ctx).strip("<>")
    choices = getattr(param.type, "choices", None)
    return "|".join(map(str, choices)) if choices else param.type.name


def option_row(param, ctx) -> str:
    """One Markdown table row: the option's names, its value type, default and help."""
    names = " / ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
    kind = "flag" if param.is_flag else value_type(param, ctx).replace("|", " \\| ")
    default = param.default
    shown = "" if default is None or callable(default) or param.is_flag and not default else default
    shown = getattr(shown, "value", shown)  # enum members as their CLI words
    text = (getattr(param, "help", None) or "").replace("|", "\\|").replace("\\[", "[")
    return f"| {names} | {kind} | {'' if shown == '' else f'`{shown}`'} | {text} |"


def command_section(name: str, command) -> list[str]:
    """A command's heading, summary, arguments, option table and example."""
    lines = [f"## `fastseg {name}`", "", (command.help or "").strip(), ""]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    if arguments:
        described = (f"`{p.name.upper()}` ({p.help or value_type(p, typer.Context(command))})"
                     for p in arguments)
        lines += ["Arguments: " + ", ".join(described), ""]
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    lines += ["| option | value | default | what it does |", "|---|---|---|---|"]
    ctx = typer.Context(command)
    lines += [option_row(p, ctx) for p in options]
    if command.epilog:
        lines += ["", command.epilog.replace("\\[", "[")]
    return lines + [""]


def reference() -> str:
    sys.path.insert(0, str(ROOT))
    from fastseg.cli import app
    group = typer.main.get_command(app)
    lines = [HEADER]
    for name, command in group.commands.items():
        lines += command_section(name, command)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "reference" / "cli.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(reference())
    print(f"Wrote {out}")
