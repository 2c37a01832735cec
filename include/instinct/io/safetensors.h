#pragma once
// The safetensors format (timm / Hugging Face weights): 8-byte little-endian header length N,
// N bytes of JSON header `{name: {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {str: str}}`, then the raw little-endian tensor bytes; offsets are relative to the
// start of the data section. Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL C64.
#include <map>
#include <string>

#include "instinct/io/archive.h"

namespace instinct::io {

/// Loads every tensor (CPU, contiguous) in data-offset order, i.e. the order the writer used.
/// Validates the header length, the JSON (each name once), each dtype and shape, that each tensor's byte range has
/// exactly numel * element size bytes, lies inside the file and overlaps no other tensor.
/// Errors are one line naming the file and, where relevant, the tensor.
/// If `metadata` is non-null it receives the "__metadata__" map (empty if absent).
TensorList load_safetensors(const std::string& path,
                            std::map<std::string, std::string>* metadata = nullptr);

/// Writes tensors (detached, moved to CPU, made contiguous) in the given order with an optional
/// "__metadata__" string map; the header is space-padded to a multiple of 8 bytes like the
/// reference implementation. Names must be unique and non-empty and must not be "__metadata__".
/// The file is replaced atomically.
void save_safetensors(const std::string& path, const TensorList& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace instinct::io
