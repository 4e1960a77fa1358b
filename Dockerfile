# cx-stream worker image (also runs `cx-stream simulate`).
# Two stages: `build` compiles wheels (faust-streaming has no aarch64 wheel, and without a
# compiler pip silently installs it without its C speed-ups; cx-stream's own wheel holds its
# compiled core, built from core/ with Rust by maturin), the runtime stage installs them.
# Dependencies come before the code, so a code change rebuilds only the last layers.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels/deps -r requirements.txt
# the Rust toolchain of the official image (Debian's rustc is too old for the core's crates)
COPY --from=rust:1.95-slim-bookworm /usr/local/cargo /usr/local/cargo
COPY --from=rust:1.95-slim-bookworm /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
COPY README.md ./
COPY core ./core
COPY stream ./stream
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/app .

FROM python:3.11-slim-bookworm
COPY --from=build /wheels/deps /wheels/deps
# fail the build, rather than run slowly, if Faust's C speed-ups did not compile
RUN pip install --no-cache-dir --no-index /wheels/deps/*.whl \
    && python -c "import faust._cython.streams, faust._cython.windows, faust.transport._cython.conductor" \
    && useradd --system --uid 1000 cx
COPY --from=build /wheels/app /wheels/app
RUN pip install --no-cache-dir --no-index --no-deps /wheels/app/*.whl \
    && python -c "import stream._core"
USER cx

ENV CX_WEB_PORT=6066 CX_DATA_DIR=/tmp/cx-data
EXPOSE 6066
ENTRYPOINT ["cx-stream"]
CMD ["worker"]
