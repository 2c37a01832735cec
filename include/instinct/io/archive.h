#pragma once
// torch.save-compatible archives as c10::IValue: the interchange format with the Python stack.
//
// Which API to use: load_object / save_object here for small nested dicts handled whole
// (checkpoints, trunk files, test fixtures); io::LazyArchive / io::ArchiveWriter (torch_zip.h) for
// multi-GB archives read or copied one tensor at a time. Both share one implementation: load_object
// is LazyArchive plus a conversion of its PyValue tree (pickle.h) to an IValue, save_object is the
// reverse conversion fed to ArchiveWriter. Nothing here uses LibTorch's pickler or unpickler.
//
// Files written here load in Python with `torch.load(path, weights_only=True)`, and Python files
// saved as (possibly nested) dicts load here, including raw `model.state_dict()` OrderedDicts,
// nn.Parameters and any pickle protocol torch.save writes. Nothing from the file is executed.
#include <ATen/core/ivalue.h>

#include <string>
#include <utility>
#include <vector>

namespace instinct::io {

/// Ordered name->tensor list (state dicts keep insertion order).
using TensorList = std::vector<std::pair<std::string, at::Tensor>>;

/// Saves a nested object as a torch.save zip archive that Python loads with
/// `torch.load(path, weights_only=True)` (torch 1.13 and 2.x), written through ArchiveWriter.
/// Supported values: dicts with string keys (c10::Dict / GenericDict; insertion order kept), lists
/// and tuples (typed lists such as c10::List<int64_t> are written as plain Python lists), strings,
/// ints, doubles, bools, None and tensors. Tensors are detached, moved to CPU and made contiguous;
/// each tensor gets its own storage holding only its elements (views are not written with their
/// base, and no two saved tensors share storage). The file is replaced atomically; on any error
/// nothing is left behind. Throws instinct::Error naming the file and the offending key path for
/// unsupported values (e.g. a dict with non-string keys, a custom class, a sparse tensor) or when
/// the file cannot be written.
void save_object(const std::string& path, const c10::IValue& obj);

/// Builds a GenericDict IValue (string keys, insertion order) from a TensorList, e.g. for
/// `{"trunk": tensor_dict(sd), "backbone": "vit_base"}` objects passed to save_object.
c10::IValue tensor_dict(const TensorList& tensors);

/// Loads a torch.save zip archive whose top-level object is a dict (possibly nested) through
/// LazyArchive. Python values map to: dict / OrderedDict -> GenericDict (insertion order; string
/// keys, or int keys; a key pickled twice keeps its last value), list -> GenericList, tuple ->
/// Tuple, str, int, float, bool, None; tensors and nn.Parameters -> CPU tensors (requires_grad not
/// set) that share storage where the saved tensors did. Records are read from the zip one storage
/// at a time; the file is never read into memory as a whole. Throws instinct::Error with a one-line
/// message naming the file for:
///  - a missing / unreadable / empty file or a directory;
///  - a legacy (pre-1.6) torch.save file or a plain pickle, or anything else that is not a zip;
///  - a truncated or corrupt archive or pickle, a TorchScript archive;
///  - a Python global torch.save does not write for tensors and plain values (e.g. os.system, a
///    numpy scalar): refused where data.pkl names it, before anything is built or run (pickle.h);
///  - an allowed Python class it does not load (e.g. a torch.Size), named with its key path;
///  - a top-level object that is not a dict.
c10::IValue load_object(const std::string& path);

/// Extracts an ordered TensorList from a dict IValue with string keys and tensor values.
/// `what_for_errors` names the source in messages (e.g. "ckpt.pt: key 'trunk'"); the error names
/// the first key whose value is not a tensor and the type found.
TensorList to_tensor_list(const c10::IValue& dict, const std::string& what_for_errors);

/// Returns dict[key] for a string-keyed dict IValue, or throws instinct::Error
/// "<what_for_errors>: missing key '<key>' (keys: a, b, ...)".
c10::IValue dict_get(const c10::IValue& dict, const std::string& key,
                     const std::string& what_for_errors);

}  // namespace instinct::io
