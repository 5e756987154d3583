// Stand-in for actions/download-artifact v7: one artifact by name (name, path, run-id, github-token), on
// @actions/artifact 4.x (see upload.js for why 4.x) against act's real artifact server.
//
// Where GitHub's and act's services differ: download-artifact reaches another run's artifact through GitHub's
// REST API, with github-token; act's server has no REST API, only the results service, which serves any run
// it stores. So with github-token and another run-id, this stand-in asks the results service for that run,
// by naming the run in the runtime token's scope as GitHub's token names the current one. As in
// download-artifact, run-id counts only with github-token; without it the current run is searched.
"use strict";
const path = require("node:path");
const core = require("@actions/core");
const { DefaultArtifactClient } = require("@actions/artifact");

function base64url(text) {
  return Buffer.from(text).toString("base64url");
}

function tokenForRun(runId) {
  const claims = JSON.parse(Buffer.from(process.env.ACTIONS_RUNTIME_TOKEN.split(".")[1], "base64url").toString());
  claims.scp = `Actions.Results:${runId}:${runId}`;
  return `${base64url('{"alg":"none","typ":"JWT"}')}.${base64url(JSON.stringify(claims))}.`;
}

async function main() {
  const name = core.getInput("name", { required: true });
  const token = core.getInput("github-token");
  const runId = core.getInput("run-id");
  const workspace = process.env.GITHUB_WORKSPACE || process.cwd();
  const target = path.resolve(workspace, (core.getInput("path") || workspace).replace(/^~/, process.env.HOME || "~"));
  if (token && runId && runId !== process.env.GITHUB_RUN_ID) {
    process.env.ACTIONS_RUNTIME_TOKEN = tokenForRun(runId);
    core.info(`Looking for the artifact '${name}' of run ${runId}`);
  }
  const client = new DefaultArtifactClient();
  const { artifact } = await client.getArtifact(name);
  core.info(`Found the artifact '${name}' (id ${artifact.id}, ${artifact.size} bytes)`);
  const result = await client.downloadArtifact(artifact.id, { path: target, expectedHash: artifact.digest });
  if (result.digestMismatch) throw new Error(`the artifact '${name}' does not match its digest`);
  core.info(`Downloaded the artifact '${name}' to ${target}`);
  core.setOutput("download-path", target);
}

main().catch((error) => core.setFailed(error.message));
