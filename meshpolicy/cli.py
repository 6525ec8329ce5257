"""`meshc`: the command line. Commands load lazily so that `meshc check`
never pays for Z3, protobuf or the language server."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from . import __version__

# name -> "module:attribute" of a click command. A command whose module is not
# installed in this build is simply not offered.
COMMANDS = {
    "check": "meshpolicy.commands.check:command",
    "verify": "meshpolicy.commands.verify:command",
    "query": "meshpolicy.commands.query:command",
    "diff": "meshpolicy.commands.diff:command",
    "graph": "meshpolicy.commands.graph:command",
    "compile": "meshpolicy.commands.compile:command",
    "certs": "meshpolicy.commands.certs:command",
    "fmt": "meshpolicy.commands.fmt:command",
    "lsp": "meshpolicy.commands.lsp:command",
    "init": "meshpolicy.commands.init:command",
    "explain": "meshpolicy.commands.explain:command",
    "up": "meshpolicy.commands.up:command",
    "proxy": "meshpolicy.commands.proxy:command",
    "import": "meshpolicy.commands.import_:command",
    "stat": "meshpolicy.commands.stat:stat_command",
    "top": "meshpolicy.commands.stat:top_command",
    "trace": "meshpolicy.commands.trace:command",
    "rollout": "meshpolicy.commands.rollout:command",
}


class LazyGroup(click.Group):
    # Set by main(), a process of its own (not a test's CliRunner): see _settled_import.
    settle_imports = False

    def list_commands(self, ctx):
        return sorted(n for n, target in COMMANDS.items() if _available(target))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None or not _available(target):
            return None
        module, attr = target.split(":")
        if self.settle_imports:
            return getattr(_settled_import(module), attr)
        return getattr(importlib.import_module(module), attr)


def _settled_import(module: str):
    """Import a command's module with the cyclic GC paused, then freeze what
    is alive: the modules, classes and parser tables of a run live as long as
    the process, so no collection, during the run or the one at exit, needs to
    scan them. A hook run (`meshc verify` on the shop example) spent about a
    quarter of its CPU time, 65-75 ms, in those scans (docs/performance.md)."""
    import gc

    from .gc_pause import gc_paused

    with gc_paused():
        mod = importlib.import_module(module)
    gc.freeze()
    return mod


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshc")
def cli() -> None:
    """meshc: check, verify and compile service-mesh policy written in .mesh files.

    \b
    Examples:
      meshc check examples/shop          # parse and type-check a mesh
      meshc verify examples/shop         # prove properties, with witnesses
      meshc compile examples/shop --target istio -o out/
    """


def main() -> None:
    LazyGroup.settle_imports = True
    try:
        cli.main(prog_name="meshc", standalone_mode=True)
    except KeyboardInterrupt:
        sys.stderr.write("meshc: interrupted\n")
        sys.exit(130)
    except Exception as exc:  # never show users a traceback
        sys.stderr.write(
            f"meshc: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in meshc; please report it with the input that caused it.\n"
        )
        if "MESHC_DEBUG" in __import__("os").environ:
            raise
        sys.exit(3)


if __name__ == "__main__":
    # `python -m meshpolicy.cli`: one module, not a second copy on `import meshpolicy.cli`
    # (whose LazyGroup.settle_imports the check command reads would stay False)
    sys.modules.setdefault("meshpolicy.cli", sys.modules[__name__])
    main()
