# Image for the engine, the gateway (with the dashboard in web/) and the simulator (the `pulse` CLI).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pulse pulse
COPY flows flows
COPY operators operators
COPY online_models online_models
COPY connectors connectors
COPY simulator simulator
COPY web web
COPY schemas schemas
# Editable: the gateway serves web/ from the source tree.
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["pulse"]
CMD ["--help"]
