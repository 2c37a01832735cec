#pragma once
// Lazy reading and streaming writing of torch.save zip archives, for multi-GB checkpoints
// (SAM3's ~3.4 GB sam3.pt) where loading everything at once is not an option.
//
// Reading parses `data.pkl` with our own pickle interpreter (the subset torch.save emits: protocol
// 2 opcodes, dicts incl. collections.OrderedDict with their `_metadata`, lists, tuples, scalars,
// strings, tensors via torch._utils._rebuild_tensor_v2 / _rebuild_parameter) into a tree whose
// tensors are references to storage records; no tensor data is read until asked for. Unlike
// LibTorch's unpickler it reads raw `model.state_dict()` (OrderedDict) files.
//
// Writing produces a zip that `torch.load(path, weights_only=True)` reads (torch 1.13 and 2.x):
// stored (uncompressed) records aligned to 64 bytes, fixed timestamps (the same input gives the same
// bytes), zip64 where sizes or offsets need it. Storage records of an input archive are copied
// byte for byte, one record in memory at a time. Output goes to a temporary file renamed over the
// destination on finish(); if the writer is destroyed unfinished, nothing is left behind.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "instinct/io/archive.h"

namespace caffe2::serialize {
class PyTorchStreamReader;
}

namespace instinct::io {

class AtomicFile;

/// A tensor inside an archive: which storage record holds it and how it is laid out there.
struct TensorRef {
  std::string storage;          ///< storage key (record `data/<key>`)
  at::ScalarType dtype = at::kFloat;
  std::string location = "cpu"; ///< device the tensor was saved from (informational)
  int64_t storage_numel = 0;    ///< elements in the storage
  int64_t offset = 0;           ///< storage offset in elements
  std::vector<int64_t> sizes, strides;
  bool requires_grad = false;
  /// Bytes the tensor's own elements occupy (numel * element size).
  int64_t nbytes() const;
};

/// A value of the unpickled object tree.
struct PyValue;
using PyPtr = std::shared_ptr<PyValue>;
struct PyValue {
  enum class Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, Tensor, Global, Storage, Object };
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                              ///< Str/Bytes contents; Global/Object: "module.name"
  std::vector<PyPtr> items;                   ///< Tuple/List elements; Object: constructor arguments
  std::vector<std::pair<PyPtr, PyPtr>> dict;  ///< Dict entries in insertion order (duplicates kept)
  TensorRef tensor;                           ///< Tensor; Storage uses storage/dtype/location/storage_numel

  static PyPtr none();
  static PyPtr boolean(bool v);
  static PyPtr integer(int64_t v);
  static PyPtr real(double v);
  static PyPtr str(std::string v);
  static PyPtr make_dict();
  static PyPtr make_list(std::vector<PyPtr> v);
  static PyPtr make_tuple(std::vector<PyPtr> v);
  static PyPtr make_tensor(TensorRef r);
  bool is_str() const { return kind == Kind::Str; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_tensor() const { return kind == Kind::Tensor; }
  /// dict[key] for a string key, nullptr if absent (first occurrence).
  PyPtr get(const std::string& key) const;
  /// Python-style type name for messages ("dict", "tensor", "str", ...).
  std::string type_name() const;
};

/// Storage class name written by torch.save for a dtype ("FloatStorage", ...) and back.
std::string storage_class_name(at::ScalarType dtype);

/// A torch.save archive opened for lazy access.
class LazyArchive {
 public:
  /// Opens and parses data.pkl. Throws instinct::Error (one line naming `path`) for a missing file,
  /// a directory, a file that is not a zip or is truncated/corrupt, a TorchScript archive, a pickle
  /// it cannot interpret (names the opcode or the Python class), or a tensor whose storage record
  /// is missing or too small.
  explicit LazyArchive(const std::string& path);
  ~LazyArchive();
  LazyArchive(const LazyArchive&) = delete;
  LazyArchive& operator=(const LazyArchive&) = delete;

  const std::string& path() const { return path_; }
  const PyPtr& root() const { return root_; }
  /// Bytes of storage record `data/<key>` (whole record; one at a time keeps memory bounded).
  std::pair<std::shared_ptr<void>, size_t> storage_bytes(const std::string& key) const;
  /// The tensor's values (CPU, its own storage, laid out as saved).
  at::Tensor load(const TensorRef& ref) const;

 private:
  std::string path_;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
  PyPtr root_;
};

/// Streams a new torch.save archive to `path` (see the file comment).
class ArchiveWriter {
 public:
  /// Throws instinct::Error naming `path` if its directory does not exist or is not writable.
  /// Sizes and offsets >= `zip64_from` use zip64 fields (a lower value lets tests cover zip64).
  explicit ArchiveWriter(const std::string& path, uint64_t zip64_from = 0xFFFFFFFFu);
  ~ArchiveWriter();
  ArchiveWriter(const ArchiveWriter&) = delete;
  ArchiveWriter& operator=(const ArchiveWriter&) = delete;

  /// A tensor node whose values are written now from `t` (detached, CPU, contiguous copy).
  PyPtr add_tensor(const at::Tensor& t);
  /// A tensor node that reuses `ref`'s storage record from `src`, copied byte for byte the first
  /// time that (archive, storage) pair is used; views sharing a storage keep sharing it.
  PyPtr copy_tensor(const LazyArchive& src, const TensorRef& ref);
  /// Writes data.pkl for `root` (dicts with string keys, lists, tuples, scalars, strings, tensor
  /// nodes from this writer) and the version record, then atomically moves the file into place.
  void finish(const PyPtr& root);
  /// Bytes written so far.
  uint64_t bytes_written() const { return offset_; }

 private:
  struct Entry {
    std::string name;
    uint64_t offset, size;
    uint32_t crc;
  };
  void write_record(const std::string& name, const void* data, size_t size);
  void write_raw(const void* data, size_t size);

  std::string path_;
  uint64_t zip64_from_;
  std::unique_ptr<AtomicFile> file_;
  std::FILE* out_ = nullptr;
  uint64_t offset_ = 0;
  std::vector<Entry> entries_;
  std::map<std::pair<const LazyArchive*, std::string>, std::string> copied_;
  int64_t next_key_ = 0;
  bool finished_ = false;
};

/// The tensors of a dict node (string keys, tensor values) loaded from `src`, in order. Errors name
/// `what` (e.g. "ckpt.pt ['trunk']") and the first offending key: a non-string key, a non-tensor
/// value, a key that occurs twice.
TensorList load_tensor_dict(const LazyArchive& src, const PyPtr& dict, const std::string& what);

/// Serialises an object tree as a protocol-2 pickle the way torch.save does (tensors become
/// persistent storage references). Exposed for tests.
std::string pickle_object(const PyPtr& root);

}  // namespace instinct::io
