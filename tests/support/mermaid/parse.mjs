// Parse Mermaid diagrams with the real mermaid package, headless.
// stdin: JSON array of diagram texts; stdout: JSON array of
// {ok, diagramType, config, error} in the same order. Exit 0 even when some fail.
// mermaid's parse() sanitises text with DOMPurify, which needs a DOM: jsdom provides one.
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const text of JSON.parse(input)) {
  try {
    const parsed = await mermaid.parse(text);
    results.push({ ok: true, diagramType: parsed.diagramType, config: parsed.config ?? {} });
  } catch (error) {
    results.push({ ok: false, error: String(error?.message ?? error) });
  }
}
process.stdout.write(JSON.stringify(results));
