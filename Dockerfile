# The sample app's image: eventbus with the OTLP exporter, and the handlers package.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY eventbus ./eventbus
COPY handlers ./handlers
RUN pip install --no-cache-dir '.[otel,fast]'
ENV EVENTBUS_METRICS_PORT=9464
EXPOSE 9464
ENTRYPOINT ["eventbus"]
CMD ["run", "handlers", "--no-scheduler"]
