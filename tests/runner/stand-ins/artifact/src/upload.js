// Stand-in for actions/upload-artifact v5: the inputs action.yml gives it (name, path, retention-days,
// if-no-files-found, overwrite), on the same @actions/artifact 4.x library upload-artifact v5 is built on,
// against act's real artifact server. Upload-artifact v6 uses @actions/artifact 5.x, whose uploads act 0.2.89
// rejects ("Error unauthorized", nektos/act#6021), so 4.x is the newest library act's server accepts.
// Paths are taken literally (files or directories, one per line): the actions using it name exact files.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const core = require("@actions/core");
const { DefaultArtifactClient } = require("@actions/artifact");

function filesUnder(entry) {
  const stat = fs.statSync(entry);
  if (!stat.isDirectory()) return [entry];
  return fs.readdirSync(entry).flatMap((name) => filesUnder(path.join(entry, name)));
}

async function main() {
  const name = core.getInput("name") || "artifact";
  const ifNoFiles = core.getInput("if-no-files-found") || "warn";
  const overwrite = core.getBooleanInput("overwrite");
  const retention = core.getInput("retention-days");
  const wanted = core.getMultilineInput("path").map((line) => path.resolve(line.replace(/^~/, process.env.HOME || "~")));
  if (wanted.some((line) => /[*?[\]]/.test(line))) {
    throw new Error("this stand-in takes plain paths, not glob patterns");
  }
  const present = wanted.filter((entry) => fs.existsSync(entry));
  const files = present.flatMap(filesUnder);
  if (files.length === 0) {
    const message = `No files were found with the provided path: ${wanted.join(", ")}. No artifacts will be uploaded.`;
    if (ifNoFiles === "error") throw new Error(message);
    if (ifNoFiles === "warn") core.warning(message);
    return;
  }
  // upload-artifact's root: the closest directory holding every path it was given.
  let root = path.dirname(present[0]);
  while (!present.every((entry) => entry.startsWith(root + path.sep))) root = path.dirname(root);
  const client = new DefaultArtifactClient();
  if (overwrite) {
    try {
      await client.deleteArtifact(name);
      core.info(`Deleted the artifact '${name}' of this run before uploading it again`);
    } catch (error) {
      core.debug(`nothing to delete: ${error.message}`);
    }
  }
  const options = retention ? { retentionDays: Number.parseInt(retention, 10) } : {};
  const result = await client.uploadArtifact(name, files, root, options);
  core.info(`Artifact ${name} has been successfully uploaded! Final size is ${result.size} bytes. Artifact ID is ${result.id}`);
  core.setOutput("artifact-id", String(result.id));
  core.setOutput("artifact-digest", result.digest || "");
  const server = process.env.GITHUB_SERVER_URL || "";
  core.setOutput("artifact-url", `${server}/${process.env.GITHUB_REPOSITORY}/actions/runs/${process.env.GITHUB_RUN_ID}/artifacts/${result.id}`);
}

main().catch((error) => core.setFailed(error.message));
