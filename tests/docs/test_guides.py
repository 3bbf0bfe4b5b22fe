"""The three guides' commands run as written (issue 17): docs/user.md and docs/provider.md against a real local
network (anvil, the contract and node processes, started by the page's own `wwwserve up`), docs/researcher.md
in a fresh directory.

THE RULE. A page is read top to bottom and every fenced block is handled by the directive in the HTML comment
on the line above its fence (`<!-- docs-test: DIRECTIVE -->`, several joined by `;`), or, with none, run:
- no directive, a ```bash block: each command line (continuation lines joined, a trailing `  # comment`
  dropped as bash would) runs in bash in one shell per page whose exports and `source` carry over
  (tests/integration/doc_commands.Machine: $WWWSERVE_HOME in tmp, the venv off PATH until the page puts it
  there, the directory standing for the user's checkout, with this checkout's `.venv` and `bench/`). It must
  exit 0; a page's command that fails fails the test. CHECKS say what some lines must also print.
- `file NAME`: the block is a file the page tells the reader to save; it is written to NAME, and a later
  line runs or reads it (`python chat.py`, `node run --config node.toml`). Any block that is not ```bash
  must carry this directive or `help-only`: output samples are written in prose, never in fences.
- `background`: each line is a server that runs until Ctrl-C. It starts in the background with the page's
  BACKGROUND arguments appended: `wwwserve up` gets free ports, `--backend fake` (canned answers, no
  model: the slow tier runs SmolLM2 for README's quickstart, test_readme_blocks) and `--block-time 0` (a
  block per transaction: the page's transactions wait for no block time), and `node run` the fake
  backend serving the model the page registered. The test waits for the event that says it is ready and
  stops every one with Ctrl-C (SIGINT) at the end; each must stop cleanly.
- `ctrl-c TEXT`: before the block, the background servers whose line holds TEXT get Ctrl-C, as the page
  says to do.
- `after unbonding`, `after notice`: before the block, the devnet's clock moves past the unbonding period or
  the withdrawal notice (evm_increaseTime, and blocks mined past the longest duel), as waiting would.
- `scaled ARGS`: each line runs with ARGS appended (the CLI takes the last value of a repeated option): a
  smaller size of a run that takes minutes, said in the page next to the block. The line itself still
  parses and runs; only its size changes.
- `help-only: REASON`: NOT run, because REASON (a GPU, a server of the reader's own, minutes of a live
  network). Instead each `wwwserve` line is parsed by the CLI's own parser (the command exists; every option,
  argument and value is valid) and a `node run` line's `--config` file and `--set` values are loaded and
  validated as the node does at start-up; any other line (`python SCRIPT ARGS`) runs as `python SCRIPT
  --help`, which must exit 0 and list every option the line uses.
PLACEHOLDERS: what a page writes that differs here is replaced in the open, per page: the Quickstart's ports
(8545, 9101, the provider's 9000) become free ports (the test never meets a `wwwserve up` someone runs on this
machine), `0xCa401...` becomes the address `wallet new carol` printed, and on the user page the model
`SmolLM2-135M-Instruct` becomes `fake` (what `--backend fake` serves).

Three in-process checks run first: every block says how it is checked (and the help-only ones parse); every
relative link of a page names a file that exists and, with `#anchor`, a heading there; every `wwwserve ...`
command the running text names exists, with the options it names.

Help-only blocks (and why): provider.md's OpenAI-compatible backend (a server of your own at that URL), vLLM
(an NVIDIA GPU, vLLM and the model's weights), the judge on another endpoint (that endpoint), researcher.md's
new live run of bench/sim_vs_live.py (anvil and six nodes for minutes). Scaled: researcher.md's `sim
reproduce` (10 seeds -> 2) and `sim incentives` (30 runs of 40,000 requests -> 2 of 1,000, 7 executors, the
measured judges only), both in one process (`--jobs 1`: for runs this small, starting a second process costs
more than it saves).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
from integration.doc_commands import (
    ROOT,
    Machine,
    cli_span_problem,
    command_lines,
    free_port,
    http_status,
    wait_until,
)

from wwwserve.cli import app
from wwwserve.devnet.anvil import increase_time, mine
from wwwserve.devnet.deploy import demo_account
from wwwserve.ledger.params import DeploymentParams
from wwwserve.node.settings import load_settings, parse_override_pairs

USER, PROVIDER, RESEARCHER = (ROOT / "docs" / f"{name}.md" for name in ("user", "provider", "researcher"))
MODEL = "SmolLM2-135M-Instruct"
PARAMS = DeploymentParams()
DEMO_ADDRESSES = {demo_account(i + 1).address for i in range(3)}  # `wwwserve up`'s three demo nodes
UP_READY = "Ctrl-C stops the network."
DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
KNOWN = ("file", "background", "ctrl-c", "after", "scaled", "help-only")


@dataclass(frozen=True)
class GuideBlock:
    """A fenced block of a guide: its info string, text (dedented), the line of its fence, its directives."""

    info: str
    text: str
    line: int
    directives: tuple[str, ...]

    def directive(self, name: str) -> str | None:
        """The argument of directive `name` ('' when it has none), or None when the block does not carry it."""
        for d in self.directives:
            word, _, rest = d.partition(" ")
            if word.rstrip(":") == name:
                return rest.strip() if not d.startswith("help-only") else d.partition(":")[2].strip()
        return None


def guide_blocks(path: Path) -> list[GuideBlock]:
    """Every fenced block of a page with the directives on the line above its fence; unknown ones fail."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        match = DIRECTIVE.match(above.strip())
        directives = tuple(d.strip() for d in match.group(1).split(";")) if match else ()
        for d in directives:
            assert d.split(" ")[0].rstrip(":") in KNOWN, f"{path.name}:{start + 1}: unknown directive {d!r}"
        blocks.append(GuideBlock(opening.group(2), textwrap.dedent("\n".join(body) + "\n"), start + 1, directives))
    return blocks


def how_run(block: GuideBlock, page: str) -> str:
    """'run', 'file', 'background' or 'help-only', after checking the block says enough to be run honestly."""
    where = f"{page}:{block.line}"
    if block.directive("help-only") is not None:
        assert block.directive("help-only"), f"{where}: help-only needs its reason (`help-only: why`)"
        return "help-only"
    if block.directive("file") is not None:
        assert block.directive("file"), f"{where}: `file` needs the name the page saves it as"
        return "file"
    assert block.info == "bash", (f"{where}: a ```{block.info} block with no `file` or `help-only` directive: "
                                  f"say how the test checks it (tests/docs/test_guides.py)")
    if block.directive("scaled") is not None:
        assert block.directive("scaled"), f"{where}: `scaled` needs the arguments that shrink the run"
    return "background" if block.directive("background") is not None else "run"


@pytest.mark.parametrize("page", [USER, PROVIDER, RESEARCHER], ids=lambda p: p.name)
def test_every_block_says_how_it_is_checked(page: Path) -> None:
    blocks = guide_blocks(page)
    assert len(blocks) >= 5, blocks
    ways = [how_run(block, page.name) for block in blocks]
    assert ways.count("run") >= 4, ways  # mostly run as written, not only parsed
    for block in blocks:
        if block.directive("help-only") is not None:  # parsing needs no process: check it here first, too
            for line in command_lines(block.text):
                if _words(line)[0] == "wwwserve":
                    _parse_wwwserve(_words(line), cwd=None)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (lines in fenced blocks are not headings)."""
    anchors, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            anchors.add(_slug(line.lstrip("#")))
    return anchors


@pytest.mark.parametrize("page", [USER, PROVIDER, RESEARCHER], ids=lambda p: p.name)
def test_every_link_of_a_guide_leads_somewhere(page: Path) -> None:
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", page.read_text()) if not t.startswith("http")]
    assert links, page
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_file(), f"{page.name}: ({link}) names no file"
        assert not anchor or anchor in _anchors(target), f"{page.name}: ({link}): no such heading in {target.name}"


def _prose(page: Path) -> str:
    """A page's text outside its fenced blocks."""
    return re.sub(r"^\s*```.*?^\s*```\s*$", "", page.read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("page", [USER, PROVIDER, RESEARCHER], ids=lambda p: p.name)
def test_every_wwwserve_command_in_the_prose_exists(page: Path) -> None:
    """The commands the running text names (`wwwserve wallet import NAME --key-file FILE`, ...) exist, with
    those options: the blocks are run, the prose is not."""
    spans = {" ".join(span.split()) for span in re.findall(r"`(wwwserve [^`]+)`", _prose(page))}
    assert spans, page
    for span in spans:
        problem = cli_span_problem(span.split()[1:])
        assert problem is None, f"{page.name}: `{span}`: {problem}"


# ---- help-only: the CLI's own parser and the node's own settings loader ----

def _words(line: str) -> list[str]:
    return shlex.split(line.partition(" # ")[0])


def _parse_wwwserve(words: list[str], cwd: Path | None) -> None:
    """Parse a `wwwserve ...` line with the CLI's own click parser, without invoking it; `node run`'s settings
    (its --config file, found in `cwd` when given, and --set values) are loaded as the node would."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("wwwserve", words[1:])
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        assert rest, f"`{' '.join(words)}`: names no command"
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    if ctx.info_name == "run" and ctx.parent is not None and ctx.parent.info_name == "node":
        config = ctx.params.get("config")
        if config is not None and cwd is not None:
            config = cwd / config
        elif config is not None:
            config = None  # the page's file is written only when the page runs
        load_settings(config, parse_override_pairs(ctx.params.get("set_") or []))


def check_help_only(machine: Machine, block: GuideBlock) -> None:
    for line in command_lines(block.text):
        words = _words(machine.fill(line))
        if words[0] == "wwwserve":
            _parse_wwwserve(words, machine.cwd)
            machine.run(f"{shlex.join(words)} --help")  # the command exists on PATH the page set up
        else:
            assert words[0] == "python" and words[1].endswith(".py"), f"help-only: `{line}` is neither"
            out = machine.run(f"{shlex.join(words[:2])} --help")
            used = [w.split("=")[0] for w in words[2:] if w.startswith("--")]
            assert all(option in out for option in used), f"`{line}`: {used} not all in its --help:\n{out}"


# ---- running a page ----

@dataclass
class Guide:
    """One page being run: its shell, how its servers start and are ready, and what its lines must print."""

    page: Path
    machine: Machine
    # a background line's start -> (arguments appended, the test that it is ready)
    background: dict[str, tuple[str, Callable[[str], bool]]] = field(default_factory=dict)
    # a substring of a line (`^...`: how the line starts) -> what its output must hold (every matching row applies)
    checks: list[tuple[str, Callable[[str, Machine], None]]] = field(default_factory=list)
    rpc_url: str = ""
    servers: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def run(self) -> None:
        for block in guide_blocks(self.page):
            way = how_run(block, self.page.name)
            self._before(block)
            if way == "file":
                name = block.directive("file")
                assert name
                text = block.text
                for placeholder, value in self.machine.placeholders:
                    text = text.replace(placeholder, value()) if placeholder in text else text
                (self.machine.cwd / name).write_text(text)
            elif way == "help-only":
                check_help_only(self.machine, block)
            elif way == "background":
                for line in command_lines(block.text):
                    self._start(line)
            else:
                scaled = block.directive("scaled")
                for line in command_lines(block.text):
                    command = f"{line.partition(' # ')[0].rstrip()} {scaled}" if scaled else line
                    out = self.machine.run(command)
                    for marker, check in self.checks:
                        if line.startswith(marker[1:]) if marker.startswith("^") else marker in line:
                            try:
                                check(out, self.machine)
                            except (AssertionError, ValueError, KeyError, OSError) as exc:
                                pytest.fail(f"{self.page.name}:{block.line}: `{line}` printed\n{out[-3000:]}\n"
                                            f"which fails its check: {exc!r}"[:6000])
                    self.ran.append(line)
        for _line, proc, log in reversed(self.servers):
            if proc.poll() is None:
                self.machine.ctrl_c(proc, log)

    def _before(self, block: GuideBlock) -> None:
        stop = block.directive("ctrl-c")
        if stop is not None:
            stopped = [(p, log) for line, p, log in self.servers if stop in line and p.poll() is None]
            assert stopped, f"{self.page.name}:{block.line}: no running server's line holds {stop!r}"
            for proc, log in stopped:
                self.machine.ctrl_c(proc, log)
        after = block.directive("after")
        if after is not None:
            seconds = {"unbonding": PARAMS.unbonding_period_s, "notice": PARAMS.withdrawal_notice_s}[after]
            increase_time(self.rpc_url, seconds + 1)
            mine(self.rpc_url, PARAMS.duel_span_blocks + 1)

    def _start(self, line: str) -> None:
        command = line.partition(" # ")[0].rstrip()
        starts = [start for start in self.background if command.startswith(start)]
        assert starts, f"{self.page.name}: background `{command}` has no row in this page's BACKGROUND"
        extra, ready = self.background[starts[0]]
        proc, log = self.machine.start(command, extra)
        wait_until(command, lambda: ready(log.read_text(errors="replace")), proc, log)
        self.servers.append((command, proc, log))


@pytest.fixture
def guide_machine(tmp_path: Path) -> Iterator[Machine]:
    home = tmp_path / "home"
    home.mkdir()
    machine = Machine("guide", home, [])
    (machine.cwd / "bench").symlink_to(ROOT / "bench")  # researcher.md runs bench/ scripts from the checkout
    try:
        yield machine
    finally:
        machine.kill_all()


def const(value: str) -> Callable[[], str]:
    return lambda: value


def up_background(rpc_port: int, base_port: int) -> tuple[str, Callable[[str], bool]]:
    return f"--backend fake --block-time 0 --port {rpc_port} --base-port {base_port}", lambda log: UP_READY in log


def _file_holds(name: str, *texts: str) -> Callable[[str, Machine], None]:
    """The file the line wrote (in the shell's directory) holds every one of `texts`."""
    def check(out: str, machine: Machine) -> None:
        written = (machine.cwd / name).read_text()
        assert all(text in written for text in texts), written[-3000:]
    return check


PLOTS = importlib.util.find_spec("matplotlib") is not None  # the `sim` extra: `sim reproduce` plots only with it


def _files_in(folder: str, *names: str) -> Callable[[str, Machine], None]:
    """The line wrote every one of `names` into `folder`."""
    def check(out: str, machine: Machine) -> None:
        present = {p.name for p in (machine.cwd / folder).iterdir()}
        assert set(names) <= present, sorted(present)
    return check


def _signed_by(who: Callable[[], set[str]]) -> Callable[[str, Machine], None]:
    def check(out: str, machine: Machine) -> None:
        signer = re.search(r"✓ signed by (0x[0-9a-fA-F]{40})", out)
        assert signer and signer.group(1) in who(), out
    return check


def _json_with(*keys: str) -> Callable[[str, Machine], None]:
    def check(out: str, machine: Machine) -> None:
        body = json.loads(machine.stdout)
        assert all(key in body for key in keys), body
    return check


def _error_code(code: str) -> Callable[[str, Machine], None]:
    def check(out: str, machine: Machine) -> None:
        assert json.loads(machine.stdout)["error"]["code"] == code, out
    return check


def _holds(*texts: str) -> Callable[[str, Machine], None]:
    def check(out: str, machine: Machine) -> None:
        assert all(text in out for text in texts), out
    return check


def _demo_totals(out: str, machine: Machine) -> None:
    """The explorer's totals are `wwwserve up`'s network: 3 active nodes staking 1 ETH each, its contract."""
    totals = json.loads(machine.stdout)
    assert totals["nodes_active"] == 3 and totals["stake_total_wei"] == str(3 * 10**18), totals
    assert totals["contract"] == machine.env["WWWSERVE_CONTRACT"], totals


def _contract_exported(out: str, machine: Machine) -> None:
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", machine.env.get("WWWSERVE_CONTRACT", "")), machine.env


def test_user_page_runs_as_written(guide_machine: Machine) -> None:
    rpc_port, base_port = free_port(), free_port(16)
    node1 = f"http://127.0.0.1:{base_port}"
    m = guide_machine
    m.placeholders = [  # PLACEHOLDERS
        ("http://127.0.0.1:9101", const(node1)),
        ("http://127.0.0.1:8545", const(f"http://127.0.0.1:{rpc_port}")),
        (MODEL, const("fake")),
    ]
    guide = Guide(USER, m, rpc_url=f"http://127.0.0.1:{rpc_port}")
    explorer_port = free_port()
    m.placeholders.insert(0, ("--port 9100", const(f"--port {explorer_port}")))
    m.placeholders.insert(0, ("http://127.0.0.1:9100", const(f"http://127.0.0.1:{explorer_port}")))
    explorer_totals = f"http://127.0.0.1:{explorer_port}/explorer/api/totals"
    guide.background = {
        "wwwserve up": up_background(rpc_port, base_port),
        "wwwserve explorer": ("", lambda log: http_status(explorer_totals) == 200),
    }
    guide.checks = [
        ("/v1/models", _json_with("data")),
        ("python -m json.tool answer.json", _holds('"wwwserve"', '"signature"')),
        ("> answer.sse", _file_holds("answer.sse", '"wwwserve"', "data: [DONE]")),
        ("/v1/completions", _json_with("choices", "wwwserve")),
        ("python chat.py", _holds("written by 0x", "stream written by 0x")),
        ("wwwserve verify answer", _signed_by(lambda: DEMO_ADDRESSES)),
        ("wwwserve verify reply.json", _signed_by(lambda: DEMO_ADDRESSES)),
        ("wwwserve verify edited.json", _holds("does not match", "refused")),
        ("no-such-model", _error_code("model_not_found")),
        (f"-d '{{\"model\": \"{MODEL}\"}}'", _error_code("missing_required_parameter")),
        ("export WWWSERVE_CONTRACT=", _contract_exported),
        ("^curl -s http://127.0.0.1:9101/explorer/api/totals", _demo_totals),
        ("^curl -s 'http://127.0.0.1:9101/explorer/api/nodes", _json_with("items", "total")),
        ("^curl -s 'http://127.0.0.1:9101/explorer/api/requests", _json_with("items", "total")),
        ("^curl -s 'http://127.0.0.1:9101/explorer/api/duels", _json_with("items", "total")),
        ("^curl -s http://127.0.0.1:9100/explorer/api/totals", _demo_totals),
    ]
    guide.run()
    assert any("wwwserve verify answer.sse" in line for line in guide.ran), guide.ran
    assert sum("/explorer/api/" in line for line in guide.ran) >= 4, guide.ran


def test_provider_page_runs_as_written(guide_machine: Machine) -> None:
    rpc_port, base_port, carol_port = free_port(), free_port(16), free_port()
    m = guide_machine

    def carol() -> str:
        found = [a for out in m.outputs for a in re.findall(r"created wallet carol: (0x[0-9a-fA-F]{40})", out)]
        assert found, "`wallet new carol` printed no address"
        return found[-1]

    m.placeholders = [  # PLACEHOLDERS
        ("0xCa401...", carol),
        ("http://127.0.0.1:8545", const(f"http://127.0.0.1:{rpc_port}")),
        ("http://127.0.0.1:9101", const(f"http://127.0.0.1:{base_port}")),
        ("http://127.0.0.1:9000", const(f"http://127.0.0.1:{carol_port}")),
        ("port = 9000", const(f"port = {carol_port}")),
    ]
    guide = Guide(PROVIDER, m, rpc_url=f"http://127.0.0.1:{rpc_port}")
    fake_backend = f"--set backend.kind=fake --set \"backend.models=['{MODEL}']\""
    carol_ready = f"http://127.0.0.1:{carol_port}/ready"
    guide.background = {
        "wwwserve up": up_background(rpc_port, base_port),
        "wwwserve node run": (fake_backend, lambda log: http_status(carol_ready) == 200),
    }
    guide.checks = [
        ("wwwserve -w carol wallet show", _holds("wallet carol: 0x")),
        ("stake show --all", lambda out, mach: _holds(carol(), *DEMO_ADDRESSES)(out, mach)),
        ("wwwserve verify answer.json", _signed_by(lambda: {carol()})),
        ("/metrics", _holds("wwwserve_")),
        # on this network node 1 serves `fake` only, so every request for carol's model is handed to carol
        ("wwwserve burst", lambda out, mach: _holds("6 of 6 answered", f"{carol()} (a peer)")(out, mach)),
        ("explorer/api/nodes/", lambda out, mach: _json_with("fees_earned_wei", "stake_wei")(out, mach)),
        ("stake withdraw", _holds("moved unbonded stake to credit")),
    ]
    guide.run()
    assert guide.ran[-1].startswith("wwwserve -w carol wallet show"), guide.ran
    # left: no stake, nothing unbonding, the withdrawal paid out (the fees of the burst stay as credit if they
    # were claimed before the node stopped, which depends on when its claim interval fell)
    final = " ".join(m.outputs[-1].split())
    assert "stake 0 ETH · unbonding 0 ETH" in final and "pending withdrawal 0 ETH" in final, final


@pytest.mark.component  # the CLI and bench scripts as subprocesses; no chain, no server
def test_researcher_page_runs_as_written(guide_machine: Machine) -> None:
    guide = Guide(RESEARCHER, guide_machine)
    guide.checks = [
        ("--out runs/hetero-seed3", _files_in("runs/hetero-seed3", "hetero_decentralized.csv", "hetero_single.csv")),
        ("--json > join-leave.json", _file_holds("join-leave.json", '"modes"', '"decentralized"')),
        ("sim reproduce", _files_in("results", "summary.json", "summary.md",
                                    *(("slo_schedule.png", "credit_quality.png") if PLOTS else ()))),
        ("python claims.py", _holds("seeds [0, 1]", "-> ")),
        ("python seeds.py", _holds("mean latency vs single:", "(5 seeds)")),
        ("--out results/incentives ", _holds("shares.csv")),
        ("sim_vs_live.py --live-from", _holds("KS distance")),
        ("sim_scale.py --one", _holds('"nodes": 1000')),
    ]
    guide.run()
    assert (guide_machine.cwd / "sim_vs_live.md").is_file()
