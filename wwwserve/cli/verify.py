"""`wwwserve verify`: check a saved response's `wwwserve` signature against the key its executor registered
on-chain."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from wwwserve.cli.common import console, contract_address, fail, options_of, web3_for


def _signed_output(data: Any) -> tuple[Any, str]:
    """The `wwwserve` extension and the answer text of a saved chat or completion response."""
    from wwwserve.node.signing import MalformedSignedResultError, SignedResult

    if not isinstance(data, dict):
        raise MalformedSignedResultError("not an OpenAI response: expected a JSON object")
    if "wwwserve" not in data:
        raise MalformedSignedResultError("the response has no `wwwserve` extension (not served by a wwwserve node?)")
    signed = SignedResult.from_json(data["wwwserve"])
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedSignedResultError("the response has no choices[0]")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    if not isinstance(text, str):
        raise MalformedSignedResultError("choices[0] has neither message.content (chat) nor text (completion)")
    return signed, text


def verify(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Saved OpenAI JSON response, or - for stdin.")],
) -> None:
    """Check a response's `wwwserve` signature against the key its executor registered on-chain."""
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.node.signing import MalformedSignedResultError, SigningError, verify_against_chain

    if file == "-":
        raw = sys.stdin.read()
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}")
        raw = path.read_text(encoding="utf-8", errors="replace")
    try:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MalformedSignedResultError(f"{file}: not JSON: {exc}") from None
        signed, text = _signed_output(data)
        opts = options_of(ctx)
        w3 = web3_for(opts.rpc_url)
        client = WWWServeClient(w3, contract_address(w3, opts))
        verify_against_chain(signed, client, output_text=text)
    except SigningError as exc:
        fail(str(exc))
    console.print(f"[green]✓[/] signed by {signed.executor} ({signed.claim.model}, request {signed.request_id})",
                  highlight=False)
