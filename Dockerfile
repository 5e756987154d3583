# buildonce as a container, for any CI system: the CLI, the docker CLI and the buildx plugin, nothing else.
#
#   docker buildx build -t buildonce .
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD:$PWD" -w "$PWD" \
#     -e GITHUB_EVENT_NAME -e GITHUB_EVENT_PATH -e GITHUB_SHA -e GITHUB_REF -e GITHUB_OUTPUT ... \
#     buildonce plan|build|consume|verify
#
# Behind a TLS-inspecting proxy, give the build the proxy's CA bundle as a BuildKit secret. It is mounted only
# for the RUN steps that download, and never lands in a layer:
#
#   docker buildx build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t buildonce .
#
# Both images below are pinned by digest (the multi-platform index, from docker-library/repo-info); either can
# be swapped with --build-arg. BASE_IMAGE needs `python3` with the venv module: the official python images,
# or Debian's python3 and python3-venv. DOCKER_CLI_IMAGE needs the static docker CLI at /usr/local/bin/docker
# and buildx at /usr/local/libexec/docker/cli-plugins/docker-buildx, where the official docker:*-cli images
# keep them. Copying the binaries needs no package manager and no network.
#
# git is left out (Debian's git brings perl, tens of MB): for events whose payload has no
# head_commit, such as pull requests, `plan` then takes the created label from the clock and says so.
ARG BASE_IMAGE=python:3.12-slim@sha256:229a2c5bfa27522db7815ea81f9bed70af17ccb9de9fc7ad142b1877b5830d36
ARG DOCKER_CLI_IMAGE=docker:29.6.2-cli@sha256:be132a9f282288de4afaf63379dff75711fda0147c6b72a9df44e51841402144

FROM ${DOCKER_CLI_IMAGE} AS docker-cli

FROM ${BASE_IMAGE} AS builder
# The runtime set is installed from requirements.lock with --require-hashes and --no-deps (the lock is the
# whole set, see scripts/lock). The build backend is pinned by hash too: with build isolation pip would fetch
# whatever setuptools is newest, unchecked.
ARG SETUPTOOLS="setuptools==84.2.1 --hash=sha256:ca140b45d5325a9478f880e351484f62fef15f336462e449ca0c03c873d589c2"
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=ca-bundle,required=false \
    --mount=type=cache,id=buildonce-pip,target=/root/.cache/pip \
    set -eu; \
    if [ -s /run/secrets/ca-bundle ]; then \
        export PIP_CERT=/run/secrets/ca-bundle SSL_CERT_FILE=/run/secrets/ca-bundle; \
    fi; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore; \
    python3 -m venv /opt/buildonce; \
    /opt/buildonce/bin/pip install --quiet --require-hashes --no-deps --only-binary :all: -r /tmp/requirements.lock; \
    python3 -m venv /opt/build-backend; \
    echo "$SETUPTOOLS" >/tmp/build-backend.txt; \
    /opt/build-backend/bin/pip install --quiet --require-hashes -r /tmp/build-backend.txt

COPY pyproject.toml README.md LICENSE /tmp/buildonce/
COPY src /tmp/buildonce/src
# Offline from here: the wheel is built with the pinned backend, and pip leaves the runtime venv, which only
# needs the interpreter and the installed packages.
RUN set -eu; \
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore; \
    /opt/build-backend/bin/pip wheel --quiet --no-deps --no-build-isolation --no-index \
        --wheel-dir /tmp/dist /tmp/buildonce; \
    /opt/buildonce/bin/pip install --quiet --no-deps --no-index /tmp/dist/buildonce-*.whl; \
    /opt/buildonce/bin/python3 -m pip uninstall --quiet --yes pip setuptools; \
    /opt/buildonce/bin/buildonce --version

FROM ${BASE_IMAGE}
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker-cli /usr/local/libexec/docker/cli-plugins/docker-buildx \
    /usr/local/libexec/docker/cli-plugins/docker-buildx
# The venv's interpreter is a link to the base's python3, which this stage shares with the builder.
COPY --from=builder /opt/buildonce /opt/buildonce
# PATH is spelled out: a base made with `docker import` has none to extend.
ENV PATH=/opt/buildonce/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root, on purpose: the job talks to the engine through the mounted /var/run/docker.sock, whose group differs
# from host to host, and it writes GITHUB_OUTPUT and the workspace, which the runner owns. Whoever can reach
# that socket is root on the host anyway, so another user here would protect nothing.
USER root
# No WORKDIR: the runner mounts the workspace and sets it (`-v "$PWD:$PWD" -w "$PWD"`), and relative paths in
# the inputs are resolved against it.
ENTRYPOINT ["buildonce"]
