"""`wwwserve credit ...`: deposit native ETH as credit, and withdraw it after the notice period."""

from __future__ import annotations

from typing import Annotated

import typer

from wwwserve.cli.common import AMOUNT_SETTINGS, contract_client, fmt_wei, print_done, wei_arg

credit_app = typer.Typer(help="Deposit native ETH as credit and withdraw it after the notice period.",
                         no_args_is_help=True)


@credit_app.command("deposit", context_settings=AMOUNT_SETTINGS)
def credit_deposit(ctx: typer.Context, amount: Annotated[str, typer.Argument(help="e.g. 1.5eth, 100credit")]) -> None:
    """Deposit native ETH as credit."""
    wei = wei_arg(amount)
    client = contract_client(ctx)
    print_done(f"deposited {fmt_wei(wei)}", (client.deposit(wei)))


@credit_app.command("withdraw", context_settings=AMOUNT_SETTINGS)
def credit_withdraw(
    ctx: typer.Context,
    amount: Annotated[str | None, typer.Argument(help="Amount to request; omit to complete a pending one.")] = None,
    cancel: Annotated[bool, typer.Option(help="Cancel the pending withdrawal.")] = False,
) -> None:
    """Request a withdrawal (notice period), complete it once the notice is over, or cancel it."""
    client = contract_client(ctx)
    if cancel:
        print_done("cancelled the pending withdrawal", client.cancel_withdrawal())
        return
    if amount is not None:
        wei = wei_arg(amount)
        result = (client.request_withdrawal(wei))
        bal = client.balances(client.sender.address)
        print_done(f"requested withdrawal of {fmt_wei(wei)}; available at unix time {bal.withdrawable_at_s}", result)
        return
    result = client.withdraw()
    print_done("withdrew the pending withdrawal to the wallet", result)
