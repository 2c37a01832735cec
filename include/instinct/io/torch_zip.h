#pragma once
// The torch.save zip container: lazy reading and streaming writing, for multi-GB checkpoints
// (SAM3's ~3.4 GB sam3.pt) where loading everything at once is not an option.
//
// Which API to use: io::load_object / io::save_object (archive.h) for small dicts handled whole as
// c10::IValue; LazyArchive / ArchiveWriter here for large archives, or to copy tensors between
// archives without decoding them. load_object and save_object are built on these two classes, and
// both read and write `data.pkl` with the one pickle implementation in pickle.h (PyValue tree).
//
// Reading opens the zip, checks it is a torch.save file and parses data.pkl into a PyValue tree
// whose tensors are references to storage records; no tensor data is read until asked for. Raw
// `model.state_dict()` files (OrderedDict) read like plain dicts.
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
#include "instinct/io/pickle.h"

namespace caffe2::serialize {
class PyTorchStreamReader;
}

namespace instinct::io {

class AtomicFile;

/// A torch.save archive opened for lazy access.
class LazyArchive {
 public:
  /// Opens and parses data.pkl. Throws instinct::Error (one line naming `path`) for a missing file,
  /// a directory, an empty file, a legacy (pre-1.6) torch.save file or a plain pickle, a file that
  /// is not a zip or is truncated/corrupt, a zip entry whose name is absolute, has a `..` component
  /// or occurs twice, a record whose sizes the file cannot hold, a TorchScript archive, a data.pkl
  /// that unpickle() rejects (pickle.h; any Python global torch.save does not write is refused
  /// there, nothing is executed), or a tensor whose storage record is missing or smaller than its
  /// storage claims. Allowed classes that are not tensors or dicts (torch.Size, ...) stay in the
  /// tree as Global/Object nodes.
  explicit LazyArchive(const std::string& path);
  ~LazyArchive();
  LazyArchive(const LazyArchive&) = delete;
  LazyArchive& operator=(const LazyArchive&) = delete;

  const std::string& path() const { return path_; }
  const PyPtr& root() const { return root_; }
  /// Bytes of storage record `data/<key>` (whole record; one at a time keeps memory bounded).
  std::pair<std::shared_ptr<void>, size_t> storage_bytes(const std::string& key) const;
  /// The tensor's values (CPU, its own storage, laid out as saved, requires_grad not set). Throws
  /// instinct::Error naming the file if the storage record is missing or too small.
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

  /// A tensor node whose values are written now from `t` (detached, CPU, contiguous copy) into a
  /// new storage record holding only its elements.
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

}  // namespace instinct::io
