#!/usr/bin/env node
// Decrypts upload-service attachments the way discord-cloud's manager does, with Node's own
// crypto and nothing from this project: AES-256-GCM, attachment = iv(16) | tag(16) | ciphertext.
//
// Input, either
//   node decrypt.js KEY_BASE64 OUT_PATH ATTACHMENT...
// or, with no arguments, JSON on stdin:
//   {"key": "<base64>", "out": "<path>", "attachments": ["<path>", ...]}
// The attachments are given in chunk order. The plaintexts, concatenated, are written to
// OUT_PATH; one JSON line goes to stdout:
//   {"chunks": N, "bytes": TOTAL, "chunk_hashes": [...], "hash": "<file hash>"}
// where the file hash is PROTOCOL.md section 4's: SHA-256 (hex) of the concatenated hex
// SHA-256 of each plaintext chunk. Exits 1 (message on stderr) if any attachment fails to
// authenticate.
"use strict";

const crypto = require("crypto");
const fs = require("fs");

const IV_SIZE = 16;
const TAG_SIZE = 16;

function readInput() {
  const args = process.argv.slice(2);
  if (args.length > 0) {
    if (args.length < 2) throw new Error("usage: decrypt.js KEY_BASE64 OUT_PATH ATTACHMENT...");
    return { key: args[0], out: args[1], attachments: args.slice(2) };
  }
  return JSON.parse(fs.readFileSync(0, "utf8"));
}

function open(key, attachment) {
  const iv = attachment.subarray(0, IV_SIZE);
  const tag = attachment.subarray(IV_SIZE, IV_SIZE + TAG_SIZE);
  const ciphertext = attachment.subarray(IV_SIZE + TAG_SIZE);
  const decipher = crypto.createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

function sha256Hex(data) {
  return crypto.createHash("sha256").update(data).digest("hex");
}

function main() {
  const input = readInput();
  const key = Buffer.from(input.key, "base64");
  if (key.length !== 32) throw new Error(`the key is ${key.length} bytes, not 32`);
  const out = fs.openSync(input.out, "w");
  const chunkHashes = [];
  let bytes = 0;
  try {
    input.attachments.forEach((path, index) => {
      let plain;
      try {
        plain = open(key, fs.readFileSync(path));
      } catch (error) {
        throw new Error(`chunk ${index} (${path}) does not decrypt: ${error.message}`);
      }
      fs.writeSync(out, plain);
      chunkHashes.push(sha256Hex(plain));
      bytes += plain.length;
    });
  } finally {
    fs.closeSync(out);
  }
  const summary = {
    chunks: chunkHashes.length,
    bytes,
    chunk_hashes: chunkHashes,
    hash: sha256Hex(chunkHashes.join("")),
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

try {
  main();
} catch (error) {
  process.stderr.write(`decrypt.js: ${error.message}\n`);
  process.exit(1);
}
