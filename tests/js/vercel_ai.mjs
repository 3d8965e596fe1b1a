// The Vercel AI SDK's default `openai` provider (@ai-sdk/openai: `openai(...)` is its
// Responses API model) against the platform at BASE_URL with the platform key API_KEY:
// generateText, streamText, and a tool loop (plain and streamed). Prints one JSON summary
// on stdout; exits 1 on any failure (the error in the summary and on stderr).
// Run by tests/unit/test_vercel_ai_sdk.py; install first: npm ci --prefix tests/js
import process from "node:process";

const { BASE_URL, API_KEY, MODEL = "gpt-test" } = process.env;
if (!BASE_URL || !API_KEY) {
  console.error("usage: BASE_URL=http://host:port/v1 API_KEY=sk-... node vercel_ai.mjs");
  process.exit(2);
}
// The default provider instance reads these when its module loads: set them first.
process.env.OPENAI_BASE_URL = BASE_URL;
process.env.OPENAI_API_KEY = API_KEY;

const { openai } = await import("@ai-sdk/openai");
const { generateText, streamText, tool, stepCountIs } = await import("ai");
const { z } = await import("zod");

// Every URL the SDK fetched, to show which endpoint the default model calls.
const fetched = [];
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  fetched.push(new URL(typeof input === "string" ? input : input.url).pathname);
  return realFetch(input, init);
};

function weatherTool(calls) {
  return tool({
    description: "The weather in a city.",
    inputSchema: z.object({ location: z.string() }),
    execute: async ({ location }) => {
      calls.push({ location });
      return `sunny in ${location}`;
    },
  });
}

function usage(u) {
  return { inputTokens: u?.inputTokens, outputTokens: u?.outputTokens };
}

function steps(result) {
  return result.steps.map((s) => ({
    finishReason: s.finishReason,
    toolCalls: s.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input })),
    toolResults: s.toolResults.map((r) => ({ toolName: r.toolName, output: r.output })),
    text: s.text,
    responseId: s.providerMetadata?.openai?.responseId ?? null,
  }));
}

const summary = { fetched };
try {
  const model = openai(MODEL);
  summary.provider = model.provider;

  const generated = await generateText({ model, prompt: "Say something." });
  summary.generate = {
    text: generated.text,
    finishReason: generated.finishReason,
    usage: usage(generated.usage),
    responseId: generated.providerMetadata?.openai?.responseId ?? null,
  };

  // a chat's next turn: the first answer's messages as the SDK returns them (its text
  // carries the stored item's id, which the SDK sends as an `item_reference`)
  const followUp = await generateText({
    model,
    messages: [
      { role: "user", content: "Say something." },
      ...generated.response.messages,
      { role: "user", content: "Say it again." },
    ],
  });
  summary.followUp = { text: followUp.text, finishReason: followUp.finishReason };

  const streamed = streamText({ model, prompt: "Say something, streamed." });
  let streamedText = "";
  for await (const delta of streamed.textStream) streamedText += delta;
  summary.stream = {
    text: streamedText,
    finalText: await streamed.text,
    finishReason: await streamed.finishReason,
    usage: usage(await streamed.usage),
  };

  const calls = [];
  const loop = await generateText({
    model,
    prompt: "What is the weather in Paris?",
    tools: { weather: weatherTool(calls) },
    stopWhen: stepCountIs(3),
  });
  summary.toolLoop = {
    text: loop.text,
    executed: calls,
    steps: steps(loop),
    totalUsage: usage(loop.totalUsage),
  };

  const streamCalls = [];
  const streamLoop = streamText({
    model,
    prompt: "What is the weather in Paris? (streamed)",
    tools: { weather: weatherTool(streamCalls) },
    stopWhen: stepCountIs(3),
  });
  const parts = [];
  let streamLoopText = "";
  for await (const part of streamLoop.fullStream) {
    if (part.type === "error") throw part.error;
    parts.push(part.type);
    if (part.type === "text-delta") streamLoopText += part.text;
  }
  summary.streamToolLoop = {
    text: streamLoopText,
    executed: streamCalls,
    steps: steps({ steps: await streamLoop.steps }),
    parts: [...new Set(parts)],
    totalUsage: usage(await streamLoop.totalUsage),
  };
  summary.ok = true;
} catch (err) {
  summary.ok = false;
  summary.error = String(err?.stack ?? err);
  if (err?.responseBody) summary.responseBody = err.responseBody;
  console.error(summary.error);
}
process.stdout.write(JSON.stringify(summary) + "\n");
process.exit(summary.ok ? 0 : 1);
