"""The shell commands the docs show still run: options get renamed, and a command in a doc that no longer parses
is an instruction that fails.

Every ``python SCRIPT.py ...`` in a shell fence of a Markdown file git tracks (and in the Makefile's recipes) goes
through that script's own argparse parser; every ``make TARGET`` is a target of the Makefile; every ``configs/...``
file a Markdown file names, in a command or in prose, is in the repository; a ``train.py --loss`` is a name in
``LOSSES`` (read from the source) or an upper-case placeholder.  Outside the commands too, every ``--option`` a Markdown
file names (a sentence, a table) is an option of one of the scripts, and every ``from facelandmarks... import`` in a
Python fence names a module and a name the package has (read from the source).  Only parsers run: no face data, no
backend, no training.  That the
recipes in configs/ load as train.py reads them is test_config.py's test_every_recipe_in_configs_is_a_valid_train_config.
"""

import ast
import contextlib
import functools
import importlib
import io
import re
import shlex
import subprocess
import sys
import unittest.mock
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from facelandmarks.training.loss_names import names_in_source

ROOT = Path(__file__).resolve().parents[2]
CLI = ("datagen", "train", "evaluate", "export", "models")  # python NAME.py and facelandmarks-NAME
SHELL = ("bash", "sh", "shell", "console")
OPENING = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
# an unlabelled fence mixes commands with their output: there only lines that start with a command count
COMMAND_LINE = re.compile(r"^\s*(\$\s+)?([A-Za-z_]\w*=\S*\s+)*(\S*/)?(python3?|make|facelandmarks-\w+)\s")
PYTHON = re.compile(r"(\S*/)?python3?(\.\d+)?")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "{", "}"}
REDIRECT = re.compile(r"\d*[<>]+&?|&>")
CONFIG = re.compile(r"configs/[\w./-]*?\.(?:json|ya?ml)\b")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # configs/X.json, configs/NAME.json, datagen.py prepare NAME


@dataclass(frozen=True)
class Command:
    """One command a doc shows: where it starts, and its words from the program on (``train.py --epochs 2``)."""

    file: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        shown = shlex.join(self.words)
        return shown if self.words[0] == "make" else f"python {shown}"


def strip_comment(line: str) -> tuple[str, bool]:
    """``line`` without its ``# comment`` (a # that starts a word outside quotes, as the shell reads it), and whether
    it had one: a backslash inside a comment does not continue the line."""
    quote, escaped = None, False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], True
    return line, False


def fenced_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, whether its fence is labelled as shell) of the lines in shell and unlabelled fences."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            if match := OPENING.match(line):
                fence = match.group(1), match.group(2).lower()
            continue
        marker, language = fence
        if line.strip().startswith(marker) and not line.strip().strip(marker[0]):
            fence = None
        elif language in SHELL or not language:
            yield number, line, language in SHELL


def logical_lines(lines: Iterable[tuple[int, str, bool]]) -> Iterator[tuple[int, str, bool]]:
    """Backslash continuations joined and comments dropped, with the number of the line each command starts on."""
    pending, start, labelled = "", 0, True
    for number, line, shell in lines:
        code, commented = strip_comment(line)
        if not pending:
            start, labelled = number, shell
        if not commented and code.rstrip().endswith("\\"):
            pending += code.rstrip()[:-1] + " "
            continue
        yield start, pending + code, labelled
        pending = ""
    if pending:
        yield start, pending, labelled


def split_words(line: str) -> list[list[str]]:
    """The simple commands of a shell line: its words split at ``&&``, ``||``, ``;``, ``|``, redirections dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    commands, words, skip = [], [], False
    for word in lexer:
        if skip:
            skip = False
        elif word in SEPARATORS:
            commands.append(words)
            words = []
        elif REDIRECT.fullmatch(word):
            skip = True  # and its target
        else:
            words.append(word)
    return [c for c in [*commands, words] if c]


def program_words(words: list[str]) -> tuple[str, ...] | None:
    """A command's words from the script on (``train.py ...``) or from ``make``, past ``VAR=value`` prefixes and
    wrappers such as ``timeout -s KILL 490``; None for other programs (``python -m``, ``tensorboard``)."""
    for i, word in enumerate(words):
        if i == 0 and word == "make":
            return tuple(words)
        if PYTHON.fullmatch(word):
            rest = words[i + 1:]
            return tuple(rest) if rest and rest[0].endswith(".py") else None
        if word.startswith("facelandmarks-") and word.removeprefix("facelandmarks-") in CLI:
            return (word.removeprefix("facelandmarks-") + ".py", *words[i + 1:])
        if i == 0 and not ASSIGNMENT.match(word) and word not in ("timeout", "time", "env", "nohup"):
            return None
    return None


def commands_in(text: str, file: str) -> tuple[list[Command], list[str]]:
    """The script and make commands of a Markdown text's shell fences, and the lines the shell could not read."""
    found, unreadable = [], []
    for line, code, labelled in logical_lines(fenced_lines(text)):
        if not labelled and not COMMAND_LINE.match(code):
            continue
        try:
            simple = split_words(re.sub(r"^\s*\$\s+", "", code))
        except ValueError as err:  # an unclosed quote
            unreadable.append(f"{file}:{line}: {err}: {code.strip()}")
            continue
        found += [Command(file, line, words) for words in map(program_words, simple) if words]
    return found, unreadable


def makefile_commands() -> list[Command]:
    """The script and make commands of the Makefile's recipes: ``$(NAME)`` read as its plain default (``SIZE ?= 128``)
    or else as the word NAME; a prefix such as ``$(WITH_ALLOCATOR)`` (``LD_PRELOAD=...`` or nothing) dropped."""
    text = (ROOT / "Makefile").read_text()
    defaults = dict(re.findall(r"^(\w+)\s*[?:]?=[ \t]*([^$\n]*)$", text, re.M))

    def expand(line: str) -> str:
        line = re.sub(r"^\t[@-]*(\$\(\w+\)\s+)*", "", line)
        return re.sub(r"\$\((\w+)\)", lambda name: defaults.get(name[1]) or name[1], line)

    recipe = "\n".join(expand(line) if line.startswith("\t") else "" for line in text.splitlines())
    found, unreadable = commands_in(f"```bash\n{recipe}\n```\n", "Makefile")
    assert not unreadable
    return [Command(c.file, c.line - 1, c.words) for c in found]  # the fence's opening line came first


def benchmark_parser(path: Path):
    """A benchmark script's ``build_parser``, built from its lines above its first ``if __name__ == "__main__":``
    (fit_check and train_throughput import Keras below that line, once their flags are checked)."""
    head = path.read_text().split('\nif __name__ == "__main__":', 1)[0]
    namespace = {"__name__": f"benchmarks.{path.stem}", "__file__": str(path)}
    exec(compile(head, str(path), "exec"), namespace)
    return namespace["build_parser"]


@functools.cache
def parser_of(script: str):
    """How ``script`` (as typed after ``python``) reads its arguments: a function of argv, or a one-line problem."""
    path = Path(script)
    if path.parent == Path(".") and path.stem in CLI:
        module = importlib.import_module(f"facelandmarks.cli.{path.stem}")
        return datagen_parse if path.stem == "datagen" else (lambda argv: module.build_parser().parse_args(argv))
    if not (ROOT / path).is_file():
        return f"{script}: no such script in the repository"
    if path.parent == Path("benchmarks"):
        build = benchmark_parser(ROOT / path)
        return lambda argv: build().parse_args(argv)
    return f"{script}: a script this test has no parser for (add it to parser_of)"


def datagen_parse(argv: list[str]):
    """``datagen.py``'s own parsing, with an upper-case placeholder for a dataset (``prepare NAME``: the reader
    docs/data.md's "Adding a dataset reader" adds, which no checkout registers) read as a registered name, as
    ``configs/NAME.json`` is read as a recipe; a lower-case name the registry lacks still fails."""
    from facelandmarks.cli.datagen import parse_command
    from facelandmarks.data.readers import READERS

    placeholders = {word.lower(): None for word in argv if PLACEHOLDER.fullmatch(word) and word.lower() not in READERS}
    with unittest.mock.patch.dict(READERS, placeholders):
        return parse_command(argv)


@functools.cache
def loss_names() -> tuple[str, ...]:
    """The keys of ``LOSSES`` in ``facelandmarks/models/losses.py``, read from its source as ``train.py --help`` reads
    them (``train.py`` checks a ``--loss`` only once Keras has loaded, which this test does not do)."""
    names = names_in_source((ROOT / "facelandmarks" / "models" / "losses.py").read_text())
    assert names, "no LOSSES = {...} in facelandmarks/models/losses.py"
    return names


def unknown_loss(program: str, parsed) -> str | None:
    """A ``train.py --loss`` that no checkout registers, unless written as a placeholder (``--loss NAME``: the
    loss docs/models.md's "Adding a loss" adds) or given with ``--plugins``, which may register it."""
    loss = getattr(parsed, "loss", None) if program == "train.py" else None
    if getattr(parsed, "plugins", None):  # a plugin may register it (tests/data/test_plugins.py trains the doc's)
        return None
    if loss is None or PLACEHOLDER.fullmatch(loss) or loss in loss_names():
        return None
    return f"--loss: unknown loss {loss!r}; known: {', '.join(loss_names())}"


@functools.cache
def make_targets() -> frozenset:
    return frozenset(re.findall(r"^([\w.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


def problem(command: Command) -> str | None:
    """What is wrong with a command, in one line (argparse's own complaint for a bad option), or None."""
    program, *args = command.words
    args = [a for a in args if a != "..."]  # more of the same (runs, options), as in 'evaluate.py runs/a runs/b ...'
    if program == "make":
        missing = [a for a in args if not a.startswith("-") and not ASSIGNMENT.match(a) and a not in make_targets()]
        return f"no target {', '.join(missing)} in the Makefile" if missing else None
    parse = parser_of(program)
    if isinstance(parse, str):
        return parse
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        try:
            parsed = parse(args)
        except SystemExit as end:  # argparse's way out, also for --help (status 0)
            if end.code:
                return " ".join(said.getvalue().split()) or f"exit status {end.code}"
            return None
    return unknown_loss(program, parsed)


def report(commands: Iterable[Command]) -> list[str]:
    return [f"{c.file}:{c.line}: {c}: {p}" for c in commands if (p := problem(c))]


def missing_configs(text: str, file: str) -> list[str]:
    """``FILE:LINE: configs/...: no such file`` for each file of configs/ that ``text`` names and the repository lacks."""
    return [f"{file}:{number}: {path}: no such file in the repository"
            for number, line in enumerate(text.splitlines(), 1) for path in CONFIG.findall(line)
            if not PLACEHOLDER.fullmatch(Path(path).stem) and not (ROOT / path).is_file()]


def tracked_docs() -> dict[str, str]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {name: (ROOT / name).read_text() for name in listed.split()}


def doc_commands() -> tuple[list[Command], list[str]]:
    found, unreadable = [], []
    for name, text in tracked_docs().items():
        commands, bad = commands_in(text, name)
        found += commands
        unreadable += bad
    return found, unreadable


def test_commands_are_read_as_the_shell_reads_them():
    text = """Prose with python train.py --bogus outside a fence.

```bash
# a comment line: python train.py --bogus
KERAS_BACKEND=jax python3 train.py --config configs/demo.json \\
    --epochs 2   # and --epochs 4 \\
python evaluate.py runs/a runs/b ... --data d.npz --where source=300w \\
    --flip-test                            # and source=youtube68
cd /tmp && python datagen.py info a.npz | head -3; make demo TCMALLOC=/x.so
timeout -s KILL 490 .venv/bin/python benchmarks/crop_speed.py --size 64 > out.txt
python -m pytest tests -k 'a # b'; tensorboard --logdir runs/; facelandmarks-models --list
```

```python
subprocess.run(["python", "train.py", "--bogus"])
```

```
$ python export.py --to 'a b'
exported to a b (python train.py --bogus in the output is not a command)
```
"""
    found, unreadable = commands_in(text, "x.md")
    assert unreadable == []
    assert [(c.line, c.words) for c in found] == [
        (5, ("train.py", "--config", "configs/demo.json", "--epochs", "2")),
        (7, ("evaluate.py", "runs/a", "runs/b", "...", "--data", "d.npz", "--where", "source=300w", "--flip-test")),
        (9, ("datagen.py", "info", "a.npz")),
        (9, ("make", "demo", "TCMALLOC=/x.so")),
        (10, ("benchmarks/crop_speed.py", "--size", "64")),
        (11, ("models.py", "--list")),
        (19, ("export.py", "--to", "a b")),
    ]
    assert report(found) == []


def test_a_bad_option_a_missing_config_script_or_target_is_reported_with_its_file_and_line():
    text = ("# Training\n\n```bash\npython train.py --config configs/demo.json \\\n    --no-such-option 3   # renamed\n"
            "python datagen.py prepare 300w youtube68 --source a --size 128 --out b\n"
            "python evaluate.py --data t.npz --flip-test=yes\npython benchmarks/no_such.py\nmake no-such-target\n```\n"
            "Recipes: `configs/no-such-recipe.json`, configs/schemes/face5.json's pairs, `--config configs/X.json`.\n")
    lines = report(commands_in(text, "docs/x.md")[0])
    assert len(lines) == 5, lines
    assert lines[0].startswith("docs/x.md:4: python train.py --config configs/demo.json --no-such-option 3: train.py")
    assert "unrecognized arguments: --no-such-option" in lines[0]
    assert "2 dataset(s) but 1 --source" in lines[1]
    assert "--flip-test: ignored explicit argument 'yes'" in lines[2]
    assert lines[3].endswith("benchmarks/no_such.py: no such script in the repository")
    assert lines[4] == "docs/x.md:9: make no-such-target: no target no-such-target in the Makefile"
    assert missing_configs(text, "docs/x.md") == ["docs/x.md:11: configs/no-such-recipe.json: no such file in the repository"]
    # a dataset written as a placeholder (the reader a doc adds) is any dataset; a name of no reader is not
    text = "```bash\npython datagen.py prepare NAME --source d --size 64 --out o\npython datagen.py prepare lapalike " \
           "--source d --size 64 --out o\npython datagen.py prepare NAME 300w --source d --size 64 --out o\n```\n"
    lines = report(commands_in(text, "docs/z.md")[0])
    assert len(lines) == 2 and lines[0].startswith("docs/z.md:3: ") and "unknown dataset 'lapalike'" in lines[0]
    assert "2 dataset(s) but 1 --source" in lines[1]
    # a loss likewise: a placeholder is the loss a doc adds, a lower-case name must be registered. The names refused
    # here are none a loss added as docs/models.md says would take (its example, smooth_l1, failed this test once
    # added), and the known ones are whatever LOSSES holds
    text = "```bash\npython train.py mlp --loss NAME --loss-options '{\"beta\": 0.05}'\npython train.py mlp --loss wing\n" \
           "python train.py mlp --loss no_such_loss\nfacelandmarks-train mlp --loss no_such_huber\n```\n"
    lines = report(commands_in(text, "docs/l.md")[0])
    assert len(lines) == 2 and lines[0].startswith("docs/l.md:4: ") and lines[1].startswith("docs/l.md:5: "), lines
    assert lines[0].endswith(f"--loss: unknown loss 'no_such_loss'; known: {', '.join(loss_names())}")
    assert loss_names()[:4] == ("mse", "l1", "wing", "cgd") and "unknown loss 'no_such_huber'" in lines[1]
    _, unreadable = commands_in("```bash\npython train.py --model-options '{\"head\": 1}\n```\n", "docs/y.md")
    assert unreadable == ["docs/y.md:2: No closing quotation: python train.py --model-options '{\"head\": 1}"]


def test_every_command_in_the_docs_parses():
    found, unreadable = doc_commands()
    assert len({c.file for c in found}) >= 8 and len(found) >= 100  # the docs' commands were found at all
    assert unreadable == []
    broken = report(found)
    assert not broken, "commands in the docs that no longer parse:\n" + "\n".join(broken)


def help_examples(script: str) -> list[Command]:
    """The commands ``script --help`` shows as examples (``  python export.py RUN ...`` or ``  train.py --config ...``
    lines, continuations joined, ``[optional parts]`` left out), read as the docs' commands are."""
    module = importlib.import_module(f"facelandmarks.cli.{script}")
    text = (module._build_parsers()[0] if script == "datagen" else module.build_parser()).format_help()
    lines = [re.sub(r"^(\s*)(?!python )(\w+\.py )", r"\1python \2", line) for line in text.splitlines()]
    lines = [re.sub(r" \[[^\]]*\]", "", line) for line in lines]  # '[--epochs N]': what may be added, not typed
    found, unreadable = commands_in("```\n" + "\n".join(lines) + "\n```\n", f"{script}.py --help")  # commands only
    assert unreadable == []
    return [c for c in found if c.words[0] == f"{script}.py"]


def test_the_scripts_help_shows_what_to_type_first_and_it_parses():
    """evaluate.py --help, the script a first photo goes through, listed 25 options and no command, and datagen.py --help
    five subcommands and no command (export.py's and train.py's show examples); every example a --help shows parses,
    as the docs' commands do."""
    examples = {script: help_examples(script) for script in ("datagen", "evaluate", "export", "train")}
    assert all(len(found) >= 3 for found in examples.values()), {s: len(found) for s, found in examples.items()}
    assert examples["evaluate"][0].words == ("evaluate.py", "--image", "photo.jpg")  # the shipped model, no run
    broken = report([c for found in examples.values() for c in found])
    assert not broken, "--help examples that do not parse:\n" + "\n".join(broken)


def test_every_file_of_configs_a_doc_names_is_in_the_repository():
    assert [line for name, text in tracked_docs().items() for line in missing_configs(text, name)] == []


def test_the_makefiles_commands_parse():
    found = makefile_commands()
    assert {c.words[0] for c in found} >= {"datagen.py", "train.py", "evaluate.py", "export.py"}
    assert report(found) == []


def test_every_benchmarks_option_says_what_it_does():
    # --help listed cluster_speed's --model, --size and --augment, train_throughput's five and others bare
    bare = [f"{path.name} {action.option_strings[0]}" for path in sorted((ROOT / "benchmarks").glob("[!_]*.py"))
            for action in benchmark_parser(path)()._actions if action.option_strings and not action.help]
    assert bare == []


def test_every_benchmark_has_a_parser_built_without_a_backend():
    loaded = "keras" in sys.modules  # another test in this process may have loaded it
    for path in sorted((ROOT / "benchmarks").glob("[!_]*.py")):  # _common.py: what two of them share
        assert benchmark_parser(path)().prog, path.name
    assert loaded or "keras" not in sys.modules


# -- options and imports named outside the commands: prose, tables, Python examples ------------------------------------

OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")
# options of other programs the docs show: tensorboard, pip, pytest, XLA_FLAGS
OTHER_PROGRAMS = {"--logdir", "--no-deps", "--no-index", "--only-binary", "--platform", "--python-version", "--no-compile",
                  "--dist", "--durations"}
IMPORT = re.compile(r"^\s*from\s+(facelandmarks[\w.]*)\s+import\s+(\([^)]*\)|[^\n#]+)|^\s*import\s+(facelandmarks[\w.]*)", re.M)
PYTHON_FENCE = re.compile(r"^(`{3,})python\s*\n(.*?)^\1\s*$", re.S | re.M)


def options_of(parser) -> set[str]:
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        for sub in (getattr(action, "choices", None) or {}).values() if hasattr(action, "_name_parser_map") else ():
            found |= options_of(sub)
    return found


@functools.cache
def script_options() -> frozenset:
    """Every option of the five scripts (each ``datagen.py`` command's), and of the benchmarks."""
    from facelandmarks.cli.datagen import _build_parsers

    _, commands = _build_parsers()
    found = set().union(*(options_of(parser) for parser in commands.values()))
    for name in CLI:
        if name != "datagen":
            found |= options_of(importlib.import_module(f"facelandmarks.cli.{name}").build_parser())
    for path in (ROOT / "benchmarks").glob("[!_]*.py"):  # _common.py is the benchmarks' shared code, no script
        found |= options_of(benchmark_parser(path)())
    return frozenset(found)


def unknown_options(text: str, file: str) -> list[str]:
    """``FILE:LINE: --option`` for each option the text names anywhere (a sentence, a table, a command) that no script
    has: a renamed option lives on in prose, where test_every_command_in_the_docs_parses does not look. ``--csv-`` (a
    family) must begin some option; XLA's ``--xla_...`` flags and a few other programs' options are not ours."""
    known = script_options() | OTHER_PROGRAMS
    return [f"{file}:{number}: {option}" for number, line in enumerate(text.splitlines(), 1)
            for option in OPTION.findall(line)
            if option not in known and not option.startswith("--xla_")
            and not (option.endswith("-") and any(o.startswith(option) for o in known))]


def package_names(module: str) -> set[str] | None:
    """The names ``from MODULE import ...`` can take, read from the source without importing it (so no backend
    loads): its top-level definitions, assignments, imports, ``__all__`` and submodules; None when no such module."""
    path = ROOT.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not source.is_file():
        return None
    names = {p.stem for p in path.glob("*.py")} | {p.name for p in path.iterdir() if p.is_dir()} if path.is_dir() else set()
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
                if getattr(target, "id", None) == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                    names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return names


def unknown_imports(text: str, file: str) -> list[str]:
    """``FILE:LINE: from M import N: ...`` for each import from the package in a Python fence that fails, and for each
    name the fence takes from a module it imports so (``npz.subset``) that the module lacks: a renamed function or a
    moved module in an example a user copies."""
    found = []
    for fence in PYTHON_FENCE.finditer(text):
        for match in IMPORT.finditer(fence.group(2)):
            line = text.count("\n", 0, fence.start(2) + match.start()) + 1 + (match.group(0)[0] == "\n")
            module = match.group(1) or match.group(3)
            names = package_names(module)
            if names is None:
                found.append(f"{file}:{line}: {module}: no such module in the package")
                continue
            wanted = re.findall(r"\w+", re.sub(r"\bas\s+\w+", "", match.group(2) or ""))
            found += [f"{file}:{line}: from {module} import {name}: {module} has no {name}" for name in wanted
                      if name not in names]
            for name in wanted:  # a module imported by name: what the fence takes from it (npz.select_points)
                inner = package_names(f"{module}.{name}") if name in names else None
                used = set(re.findall(rf"(?<![\w.]){name}\.(\w+)", fence.group(2))) if inner is not None else set()
                found += [f"{file}:{line}: {name}.{attribute}: {module}.{name}, imported here, has no {attribute}"
                          for attribute in sorted(used - (inner or set()))]
    return found


def test_an_unknown_option_or_import_is_reported_with_its_file_and_line():
    text = ("Give `--epochs 2` or `--no-such-flag`; `--csv-*` and `--nocsv-` too; tensorboard --logdir runs/.\n"
            "XLA_FLAGS=--xla_cpu_foo=1\n\n```python\nfrom facelandmarks import Predictor, FaceTracker\n"
            "from facelandmarks.data.records import (\n    FaceRecord,\n    NoRecord as Other,\n)\n"
            "import facelandmarks.models\nfrom facelandmarks.data import npz, nosuch\nfrom facelandmarks.gone import x\n"
            "npz.save_npz(path, npz.select_point(arrays))\n```\n")
    assert unknown_options(text, "x.md") == ["x.md:1: --no-such-flag", "x.md:1: --nocsv-"]
    assert unknown_imports(text, "x.md") == [
        "x.md:6: from facelandmarks.data.records import NoRecord: facelandmarks.data.records has no NoRecord",
        "x.md:11: from facelandmarks.data import nosuch: facelandmarks.data has no nosuch",
        "x.md:11: npz.select_point: facelandmarks.data.npz, imported here, has no select_point",
        "x.md:12: facelandmarks.gone: no such module in the package"]


def test_every_option_a_doc_names_is_an_option_of_a_script():
    assert "--csv-subject-column" in script_options() and "--init-head" in script_options()
    assert [line for name, text in tracked_docs().items() for line in unknown_options(text, name)] == []


def test_every_import_in_the_docs_python_examples_names_something_the_package_has():
    found = [m for text in tracked_docs().values() for fence in PYTHON_FENCE.finditer(text) for m in IMPORT.finditer(fence[2])]
    assert len(found) >= 15  # the examples' imports were found at all
    assert [line for name, text in tracked_docs().items() for line in unknown_imports(text, name)] == []
