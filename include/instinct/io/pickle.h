#pragma once
// The one pickle reader and writer of io/: the object tree of a torch.save file's `data.pkl`.
//
// Which API to use:
//  - io::load_object / io::save_object (archive.h): small nested dicts (checkpoints, fixtures,
//    trunk files) as c10::IValue, loaded or written whole.
//  - io::LazyArchive / io::ArchiveWriter (torch_zip.h): multi-GB archives (SAM3's ~3.4 GB sam3.pt),
//    the tree below with tensors as references, read one storage record at a time.
// Both go through unpickle() and pickle_object() here; nothing else in the project parses pickles.
//
// Reading interprets the subset of pickle that torch.save emits (protocols 2-5: dicts incl.
// collections.OrderedDict with their `_metadata`, lists, tuples, ints up to 64 bits, floats, bools,
// None, strings, bytes, tensors via torch._utils._rebuild_tensor(_v2) / _rebuild_parameter) without
// executing anything. A Python global outside what torch.save writes for tensors and plain values
// (the rebuild functions, torch.<T>Storage, torch.Tensor, nn.Parameter, OrderedDict, torch.Size,
// torch.device, torch dtypes, _codecs.encode) refuses the file where it is named; an allowed one
// that is not a tensor or dict (torch.Size, ...) stays a Global node, a call of it an Object node,
// for the caller to reject. Writing emits protocol 2 the way torch.save does, using only opcodes
// and globals that `torch.load(path, weights_only=True)` accepts (torch 1.13 and 2.x).
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace instinct::io {

/// A tensor inside an archive: which storage record holds it and how it is laid out there.
struct TensorRef {
  std::string storage;          ///< storage key (record `data/<key>`)
  at::ScalarType dtype = at::kFloat;
  std::string location = "cpu"; ///< device the tensor was saved from (informational)
  int64_t storage_numel = 0;    ///< elements in the storage
  int64_t offset = 0;           ///< storage offset in elements
  std::vector<int64_t> sizes, strides;
  bool requires_grad = false;   ///< as saved (nn.Parameter: its requires_grad)
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

  PyValue() = default;
  PyValue(const PyValue&) = default;
  PyValue& operator=(const PyValue&) = default;
  /// Frees nested values without recursion (a hostile pickle may nest arbitrarily deep).
  ~PyValue();

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

/// Storage class name written by torch.save for a dtype ("FloatStorage", ...). Throws
/// instinct::Error for a dtype torch has no storage class for.
std::string storage_class_name(at::ScalarType dtype);

/// Parses a torch.save `data.pkl` into its object tree (see the file comment). Storage references
/// become Tensor nodes; no storage record is read. Throws instinct::Error with one line naming
/// `path` for a Python global torch.save does not write (nothing is executed), an opcode torch.save
/// never writes, a corrupt pickle (stack underflow, missing MARK, unset memo key, unexpected end),
/// an integer wider than 64 bits, an unknown storage class, a storage declared with two sizes or a
/// byte size past 2^63, a tensor whose layout has negative sizes or strides, overflows int64 or
/// reaches past its storage, or a tree that contains itself, nests more than 1000 levels or expands
/// (through shared memo references) to far more values than the pickle has bytes.
PyPtr unpickle(const void* data, size_t size, const std::string& path);

/// Serialises an object tree as a protocol-2 pickle the way torch.save does (tensors become
/// persistent storage references). Supports None, bools, ints, floats, strings, bytes, tuples,
/// lists, dicts and tensors; throws instinct::Error for Global/Object/Storage nodes.
std::string pickle_object(const PyPtr& root);

}  // namespace instinct::io
