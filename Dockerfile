# Image of the wwwserve CLI (every command, `wwwserve node run` included); docker-compose.yml runs its deployer with it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY devnet ./devnet
COPY ledger ./ledger
COPY node ./node
COPY judge ./judge
COPY sim ./sim
COPY wwwserve ./wwwserve
RUN pip install --no-cache-dir .
ENV WWWSERVE_HOME=/data
ENTRYPOINT []
CMD ["wwwserve", "--help"]
