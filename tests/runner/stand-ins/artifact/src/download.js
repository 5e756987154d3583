// Stand-in for actions/download-artifact v7: one artifact by name (name, path, run-id, github-token), or every
// artifact of the run whose name matches a glob (pattern, with merge-multiple: all into path, else each into
// path/<name>), on @actions/artifact 4.x (see upload.js for why 4.x) against act's real artifact server.
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
  const name = core.getInput("name");
  const token = core.getInput("github-token");
  const runId = core.getInput("run-id");
  const workspace = process.env.GITHUB_WORKSPACE || process.cwd();
  const target = path.resolve(workspace, (core.getInput("path") || workspace).replace(/^~/, process.env.HOME || "~"));
  if (token && runId && runId !== process.env.GITHUB_RUN_ID) {
    process.env.ACTIONS_RUNTIME_TOKEN = tokenForRun(runId);
    core.info(`Looking for the artifact '${name}' of run ${runId}`);
  }
  const client = new DefaultArtifactClient();
  if (!name) {
    await downloadMatching(client, core.getInput("pattern"), core.getBooleanInput("merge-multiple"), target);
    return;
  }
  const { artifact } = await client.getArtifact(name);
  core.info(`Found the artifact '${name}' (id ${artifact.id}, ${artifact.size} bytes)`);
  const result = await client.downloadArtifact(artifact.id, { path: target, expectedHash: artifact.digest });
  if (result.digestMismatch) throw new Error(`the artifact '${name}' does not match its digest`);
  core.info(`Downloaded the artifact '${name}' to ${target}`);
  core.setOutput("download-path", target);
}

function globToRegExp(glob) {
  const escaped = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${escaped}$`);
}

async function downloadMatching(client, pattern, mergeMultiple, target) {
  const wanted = globToRegExp(pattern || "*");
  const { artifacts } = await client.listArtifacts({ latest: true });
  const matching = artifacts.filter((artifact) => wanted.test(artifact.name));
  core.info(`Found ${matching.length} artifact(s) matching '${pattern || "*"}'`);
  for (const artifact of matching) {
    const into = mergeMultiple ? target : path.join(target, artifact.name);
    const result = await client.downloadArtifact(artifact.id, { path: into, expectedHash: artifact.digest });
    if (result.digestMismatch) throw new Error(`the artifact '${artifact.name}' does not match its digest`);
    core.info(`Downloaded the artifact '${artifact.name}' to ${into}`);
  }
  core.setOutput("download-path", target);
}

main().catch((error) => core.setFailed(error.message));
