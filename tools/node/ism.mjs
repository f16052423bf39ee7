#!/usr/bin/env node
// Run a yuzu-onnx converted ISM model from Node.js with onnxruntime-node (CPU).
//
// Usage: node tools/node/ism.mjs MODEL.ism.onnx INPUT.npy OUT_DIR
//
// INPUT.npy is the one-hot batch the converted graph takes (e.g. float32 (N, 4, L), C order,
// as numpy.save writes it). Every output of the graph (y and y_ism for each original output y)
// is written to OUT_DIR/<output name>.npy, and a JSON line describing the run is printed.
// Only what numpy.save writes for plain numeric arrays is read and written (format 1.0-3.0,
// little-endian, C order); nothing here depends on yuzu-onnx or Python.
//
// Install: npm ci --ignore-scripts --prefix tools/node  (the CPU runtime ships in the npm
// package; the skipped install script would only download the CUDA provider).

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';

// numpy descr <-> onnxruntime-node tensor type and typed array.
const NPY_TYPES = {
  '<f4': ['float32', Float32Array],
  '<f8': ['float64', Float64Array],
  '|i1': ['int8', Int8Array],
  '|u1': ['uint8', Uint8Array],
  '<i2': ['int16', Int16Array],
  '<u2': ['uint16', Uint16Array],
  '<i4': ['int32', Int32Array],
  '<u4': ['uint32', Uint32Array],
  '<i8': ['int64', BigInt64Array],
  '<u8': ['uint64', BigUint64Array],
  '|b1': ['bool', Uint8Array],
};
const DESCR = Object.fromEntries(Object.entries(NPY_TYPES).map(([descr, [type]]) => [type, descr]));
const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

/** Read a .npy file into an ort.Tensor. */
export function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(MAGIC)) throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.subarray(major === 1 ? 10 : 12, start).toString(major === 3 ? 'utf8' : 'latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw new Error(`${path}: unreadable .npy header ${header}`);
  if (fortran === 'True') throw new Error(`${path}: Fortran-ordered arrays are not supported; save a C-ordered array`);
  const entry = NPY_TYPES[descr];
  if (!entry) throw new Error(`${path}: dtype ${descr} is not supported (one of ${Object.keys(NPY_TYPES).join(', ')})`);
  const [type, ArrayType] = entry;
  const dims = shapeText.split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const bytes = buf.subarray(start, start + count * ArrayType.BYTES_PER_ELEMENT);
  if (bytes.length !== count * ArrayType.BYTES_PER_ELEMENT) throw new Error(`${path}: truncated data`);
  const data = new ArrayType(count);
  new Uint8Array(data.buffer).set(bytes); // copy: the file buffer may not be aligned
  return new ort.Tensor(type, type === 'bool' ? Uint8Array.from(data, (v) => (v ? 1 : 0)) : data, dims);
}

/** Write an ort.Tensor as a .npy file (format 1.0). */
export function writeNpy(path, tensor) {
  const descr = DESCR[tensor.type];
  if (!descr) throw new Error(`output type ${tensor.type} cannot be written as .npy`);
  const shape = tensor.dims.length === 1 ? `(${tensor.dims[0]},)` : `(${tensor.dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n'; // pad to a multiple of 64 bytes
  const pre = Buffer.alloc(10);
  MAGIC.copy(pre);
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const data = tensor.data;
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  writeFileSync(path, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}

async function main(argv) {
  if (argv.length !== 3 || argv.includes('-h') || argv.includes('--help')) {
    console.error('usage: node ism.mjs MODEL.ism.onnx INPUT.npy OUT_DIR');
    return argv.includes('-h') || argv.includes('--help') ? 0 : 2;
  }
  const [modelPath, inputPath, outDir] = argv;
  const session = await ort.InferenceSession.create(modelPath, { executionProviders: ['cpu'] });
  if (session.inputNames.length !== 1) {
    throw new Error(`${modelPath}: expected one input, the graph has ${session.inputNames.join(', ')}`);
  }
  const x = readNpy(inputPath);
  const t0 = performance.now();
  const results = await session.run({ [session.inputNames[0]]: x });
  const seconds = (performance.now() - t0) / 1000;
  mkdirSync(outDir, { recursive: true });
  const outputs = {};
  for (const name of session.outputNames) {
    writeNpy(join(outDir, `${name}.npy`), results[name]);
    outputs[name] = results[name].dims;
  }
  console.log(JSON.stringify({ model: modelPath, input: session.inputNames[0], dims: x.dims, outputs,
    seconds, onnxruntime: ort.env.versions }));
  await session.release();
  return 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => {
  console.error(`ism.mjs: ${err.message}`);
  process.exitCode = 1;
});
