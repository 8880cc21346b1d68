"""A dataset's classes: their names in id order, optional RGB colours, and the void label's name.

VOC's 21 classes are the default. A folder dataset (`--data DIR`) or a VOC-layout dataset with its
own list (`--voc DIR --classes FILE`) reads them from a classes file, one class per line in id
order, an optional `R G B` colour after the name:

    # comments and blank lines are skipped
    background 0 0 0
    road 128 64 128
    car 0 0 142
    void: unlabelled 255 255 255

The line starting with `void:` is not a class: it renames the void label (mask value 255, never
scored) and gives its colour in RGB colour masks. Either every class has a colour or none has;
with colours, masks may be RGB images (each colour is converted to its class id exactly).

This module imports nothing but fastseg's constants and errors (it is read by the CLI's config).
"""

from dataclasses import dataclass
from pathlib import Path

from fastseg.constants import IGNORE_INDEX, VOC_CLASSES, voc_palette
from fastseg.errors import FastsegError

Colour = tuple[int, int, int]
VOID_NAME = "void"
MAX_CLASSES = IGNORE_INDEX  # ids 0..254: 255 is void


@dataclass(frozen=True)
class ClassSet:
    """Class names (index = class id), their colours (or None) and the void label's name/colour."""

    names: tuple[str, ...]
    colours: tuple[Colour, ...] | None = None
    void: str = VOID_NAME
    void_colour: Colour | None = None

    @property
    def num(self) -> int:
        return len(self.names)

    @property
    def background(self) -> bool:
        """Whether class 0 is named background: only then does foreground mIoU leave it out."""
        return self.names[0].lower() == "background"

    def palette(self) -> list[int]:
        """256×3 flat RGB ints for `PIL.Image.putpalette`: the classes' colours where given, else the
        VOC colour map (distinct colours for every index); the void colour, if given, at 255."""
        palette = voc_palette()
        for i, colour in enumerate(self.colours or ()):
            palette[3 * i:3 * i + 3] = colour
        if self.void_colour is not None:
            palette[3 * IGNORE_INDEX:3 * IGNORE_INDEX + 3] = self.void_colour
        return palette

    def colour_ids(self) -> tuple[tuple[Colour, int], ...] | None:
        """((colour, id), ...) for converting RGB masks (void's colour → 255), or None without colours."""
        if self.colours is None:
            return None
        pairs = tuple((c, i) for i, c in enumerate(self.colours))
        return pairs + (((self.void_colour, IGNORE_INDEX),) if self.void_colour is not None else ())

    def meta(self) -> dict:
        """What a weights sidecar records (`from_meta` reads it back)."""
        return {"classes": list(self.names), "colours": [list(c) for c in self.colours] if self.colours else None,
                "void": self.void, "void_colour": list(self.void_colour) if self.void_colour else None}

    @classmethod
    def from_meta(cls, meta: dict) -> "ClassSet":
        """The classes a sidecar records (an export's config.json lists them as {id, name, color}); VOC's
        for sidecars written before classes were saved."""
        listed = meta.get("classes") or VOC_CLASSES[:meta.get("num_classes", len(VOC_CLASSES))]
        names = tuple(c["name"] if isinstance(c, dict) else c for c in listed)
        colours = meta.get("colours")
        void_colour = meta.get("void_colour")
        return cls(names, tuple(tuple(c) for c in colours) if colours else None, meta.get("void") or VOID_NAME,
                   tuple(void_colour) if void_colour else None)


VOC = ClassSet(VOC_CLASSES)


def read_classes(path: Path) -> ClassSet:
    """The classes file at `path` (format: the module docstring).

    Raises:
        FastsegError: missing or unreadable file, or a line that breaks the format (file and line named).
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM is not part of class 0's name
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        raise FastsegError(f"Classes file {path} could not be read ({why}); write one class name per line, "
                           "class 0 first, as UTF-8 text.") from None
    names, colours, void, void_colour = [], [], VOID_NAME, None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        is_void = line.lower().startswith("void:")
        name, colour = _name_and_colour(path, number, line[5:].strip() if is_void else line, is_void)
        if not is_void and name.lower() == VOID_NAME:
            raise FastsegError(f"Classes file {path} line {number} names a class '{name}'; write 'void: NAME [R G B]' "
                               "for the void label (255, never scored), or rename the class to train on it.")
        if is_void:
            void, void_colour = name, colour
        else:
            names.append(name)
            colours.append(colour)
    return _checked(path, names, colours, void, void_colour)


def _name_and_colour(path: Path, number: int, line: str, void: bool = False) -> tuple[str, Colour | None]:
    """A line's name and its trailing `R G B` (0..255 each), if it has one (the void line may give
    the colour alone)."""
    words = line.split()
    tail = words[-3:]
    if len(words) >= (3 if void else 4) and all(w.lstrip("-").isdigit() for w in tail):
        colour = tuple(int(w) for w in tail)
        if not all(0 <= v <= 255 for v in colour):
            raise FastsegError(f"Classes file {path} line {number}: colour {' '.join(tail)} is outside 0..255; "
                               "give R G B as three integers from 0 to 255.")
        return " ".join(words[:-3]) or VOID_NAME, colour
    if not words:
        raise FastsegError(f"Classes file {path} line {number}: 'void:' names no label; write e.g. 'void: unlabelled'.")
    return " ".join(words), None


def _checked(path: Path, names: list[str], colours: list, void: str, void_colour: Colour | None) -> ClassSet:
    with_colour = [c is not None for c in colours]
    problems = [
        (len(names) >= 2, f"names {len(names)} class(es); a dataset needs at least 2 (e.g. background and one more)"),
        (len(names) <= MAX_CLASSES, f"names {len(names)} classes; at most {MAX_CLASSES} fit (255 is void)"),
        (len(set(names)) == len(names), f"names {_repeated(names)} twice; class names must be unique"),
        (all(with_colour) or not any(with_colour), "gives colours for some classes only; give R G B for every "
                                                   "class or for none"),
    ]
    given = [c for c in colours if c is not None] + ([void_colour] if void_colour else [])
    problems.append((len(set(given)) == len(given), f"gives colour {_repeated(given)} twice; each class needs "
                                                     "its own colour"))
    for ok, message in problems:
        if not ok:
            raise FastsegError(f"Classes file {path} {message}.")
    return ClassSet(tuple(names), tuple(colours) if all(with_colour) else None, void, void_colour)


def _repeated(values: list) -> str:
    seen = set()
    for value in values:
        if value in seen:
            return " ".join(map(str, value)) if isinstance(value, tuple) else f"'{value}'"
        seen.add(value)
    return ""


def write_classes(classes: ClassSet, path: Path) -> None:
    """Write `classes` in the classes-file format (`read_classes` reads it back equal)."""
    def line(name: str, colour: Colour | None) -> str:
        return name + (" " + " ".join(map(str, colour)) if colour else "")
    colours = classes.colours or [None] * classes.num
    lines = [line(n, c) for n, c in zip(classes.names, colours, strict=True)]
    if classes.void != VOID_NAME or classes.void_colour is not None:
        lines.append("void: " + line(classes.void, classes.void_colour))
    Path(path).write_text("\n".join(lines) + "\n")
