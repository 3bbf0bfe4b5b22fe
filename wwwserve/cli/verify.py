"""`wwwserve verify`: check a saved answer's `wwwserve` signature against the key its executor registered
on-chain: a whole JSON response, or the SSE transcript of a streamed one (`node.saved_answer`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from wwwserve.cli.common import console, contract_address, fail, options_of, web3_for


def verify(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Saved answer: the JSON response, or a stream's SSE transcript "
                                        "(curl -N ... > answer.sse); - for stdin.")],
) -> None:
    """Check a saved answer's `wwwserve` signature (its text, usage, model and request id) against the key
    its executor registered on-chain. A stream is checked whole: every chunk's text, then the signed final
    chunk and `data: [DONE]`."""
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.node.saved_answer import read_saved_answer
    from wwwserve.node.signing import SigningError, verify_against_chain

    if file == "-":
        raw = sys.stdin.read()
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}")
        raw = path.read_text(encoding="utf-8", errors="replace")
    try:
        answer = read_saved_answer(raw)
        opts = options_of(ctx)
        w3 = web3_for(opts.rpc_url)
        client = WWWServeClient(w3, contract_address(w3, opts))
        verify_against_chain(answer.signed, client, output_text=answer.text, usage=answer.usage)
    except SigningError as exc:
        fail(f"{'stdin' if file == '-' else file}: {exc}")
    signed = answer.signed
    form = f"a stream of {answer.chunks} chunks" if answer.streamed else "a whole answer"
    console.print(f"[green]✓[/] signed by {signed.executor} ({signed.claim.model}, request {signed.request_id}, "
                  f"{signed.claim.usage}; {form})", highlight=False)
