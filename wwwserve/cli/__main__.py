"""`python -m wwwserve.cli`: the same program as the `wwwserve` console script (node processes started by
`wwwserve up` run this way, with the interpreter that started them)."""

from wwwserve.cli import main

main()
