// Parses and validates an AsyncAPI document with the official parser (@asyncapi/parser), for
// the Rust test tests/e2e/asyncapi.rs.
//
//   node tests/node/asyncapi-check.mjs docs/asyncapi.yaml
//
// Any error-severity diagnostic: prints every diagnostic to stderr and exits 1.
// Otherwise prints one line of JSON to stdout and exits 0:
//   {"messages": [every message name, sorted], "channels": [every channel address, sorted]}
// Warnings are printed to stderr but do not fail the check.

import path from 'node:path';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

function describe(diagnostic) {
  const where = diagnostic.path && diagnostic.path.length > 0 ? diagnostic.path.join('.') : '(document)';
  const line = diagnostic.range ? `:${diagnostic.range.start.line + 1}` : '';
  const severity = SEVERITY[diagnostic.severity] ?? `severity ${diagnostic.severity}`;
  return `${severity} [${diagnostic.code}] at ${where}${line}: ${diagnostic.message}`;
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node asyncapi-check.mjs <path to asyncapi.yaml>');
    return 2;
  }
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, path.resolve(file)).parse();
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  // Information and hints (such as "3.1.0 exists") are left out: the document is 3.0.0 on purpose.
  for (const diagnostic of diagnostics) {
    if (diagnostic.severity === DiagnosticSeverity.Error || diagnostic.severity === DiagnosticSeverity.Warning) {
      console.error(describe(diagnostic));
    }
  }
  if (errors.length > 0 || !document) {
    console.error(`${file}: ${errors.length} error(s); the document is not valid AsyncAPI`);
    return 1;
  }

  const names = new Set();
  const unnamed = [];
  for (const message of document.allMessages()) {
    const name = message.name();
    if (typeof name === 'string' && name.length > 0) {
      names.add(name);
    } else {
      unnamed.push(message.id());
    }
  }
  if (unnamed.length > 0) {
    console.error(`${file}: messages without a name (the name must be the bus kind): ${unnamed.join(', ')}`);
    return 1;
  }
  const channels = new Set();
  for (const channel of document.allChannels()) {
    // A channel without an address (decided at run time) is listed by its id.
    channels.add(channel.address() ?? `<${channel.id()}>`);
  }
  const summary = { messages: [...names].sort(), channels: [...channels].sort() };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(error?.stack ?? String(error));
    process.exitCode = 1;
  },
);
