// Validate glTF/glb files with the Khronos glTF-Validator (npm gltf-validator).
// Usage: node tests/js/validate_gltf.mjs FILE...   (prints one JSON array of reports on stdout)
// Each report: {path, errors, warnings, infos, messages: [{code, message, severity, pointer}], extensions}.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const validator = require("gltf-validator");

const SEVERITY = ["error", "warning", "info", "hint"];

async function validate(path) {
  const bytes = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(bytes, { uri: path, maxIssues: 200 });
  const issues = report.issues;
  return {
    path,
    validatorVersion: report.validatorVersion,
    errors: issues.numErrors,
    warnings: issues.numWarnings,
    infos: issues.numInfos,
    messages: issues.messages.map((m) => ({
      code: m.code, message: m.message, severity: SEVERITY[m.severity] ?? String(m.severity), pointer: m.pointer,
    })),
    extensions: report.info ? report.info.extensionsUsed ?? [] : [],
  };
}

const reports = [];
for (const path of process.argv.slice(2)) {
  try {
    reports.push(await validate(path));
  } catch (err) {
    reports.push({ path, errors: 1, warnings: 0, infos: 0, messages: [{ code: "READ_FAILED", message: String(err), severity: "error" }] });
  }
}
process.stdout.write(JSON.stringify(reports));
