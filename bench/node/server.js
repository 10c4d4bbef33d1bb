// The competitor: the original gateway design, Node.js + Fastify + onnxruntime-node.
// Same contract as the Python server: POST /predict {"data": [...]} (one row or rows) ->
// {"model", "modelVersion", "prediction"} and an X-Model-Version header.
// Env: MODEL_PATH, MODEL_NAME, MODEL_VERSION, PORT, HOST, NODE_WORKERS (cluster size, default 2).
'use strict';

const cluster = require('node:cluster');

const workers = Number(process.env.NODE_WORKERS || 2);

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  cluster.on('exit', (worker, code) => {
    console.error(JSON.stringify({ level: 'error', message: 'worker exited', pid: worker.process.pid, code }));
  });
} else {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

async function main() {
  const ort = require('onnxruntime-node');
  const fastify = require('fastify')({ logger: false });

  const modelName = process.env.MODEL_NAME || 'model';
  const modelVersion = process.env.MODEL_VERSION || '1';
  const session = await ort.InferenceSession.create(process.env.MODEL_PATH, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  });
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];

  fastify.get('/health', async () => ({ ok: true }));

  fastify.post('/predict', async (request, reply) => {
    const data = request.body && request.body.data;
    if (!Array.isArray(data) || data.length === 0) {
      reply.code(400);
      return { error: 'body must be {"data": [...]}' };
    }
    const single = !Array.isArray(data[0]);
    const rows = single ? [data] : data;
    const width = rows[0].length;
    const flat = new Float32Array(rows.length * width);
    for (let r = 0; r < rows.length; r += 1) flat.set(rows[r], r * width);
    const tensor = new ort.Tensor('float32', flat, [rows.length, width]);
    const results = await session.run({ [inputName]: tensor });
    const out = results[outputName];
    const cols = out.dims[1] || 1;
    const values = Array.from(out.data);
    const prediction = [];
    for (let r = 0; r < rows.length; r += 1) prediction.push(values.slice(r * cols, (r + 1) * cols));
    reply.header('X-Model-Version', modelVersion);
    return { model: modelName, modelVersion, prediction: single ? prediction[0] : prediction };
  });

  await fastify.listen({ port: Number(process.env.PORT || 3000), host: process.env.HOST || '127.0.0.1' });
}
