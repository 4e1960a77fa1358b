# cx-stream worker image (also runs `cx-stream simulate`).
FROM python:3.11-slim-bookworm

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --uid 1000 cx
USER cx

ENV CX_WEB_PORT=6066 CX_DATA_DIR=/tmp/cx-data
EXPOSE 6066
ENTRYPOINT ["cx-stream"]
CMD ["worker"]
