// Validate a Prometheus operator resource with the operator's own CRD schema, as
// @kubernetes-models/prometheus-operator (pinned in package.json) compiles it:
//     node tests/validate-operator.mjs KIND FILE.json
// prints "valid", or the schema's errors and exits 1.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const [kind, file] = process.argv.slice(2);
const models = new URL("../node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/", import.meta.url);
const module = await import(new URL(`${kind}.js`, models));
const document = JSON.parse(readFileSync(file, "utf8"));
try {
    new module[kind](document).validate();
    console.log("valid");
} catch (error) {
    console.log(`${fileURLToPath(models)}${kind}: ${error.message}`);
    process.exit(1);
}
