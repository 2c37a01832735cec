#include "instinct/io/safetensors.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "instinct/common/error.h"
#include "instinct/io/atomic_file.h"
#include "io/printable.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace instinct::io {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // same limit as the reference implementation

const std::vector<std::pair<std::string, at::ScalarType>>& dtype_table() {
  static const std::vector<std::pair<std::string, at::ScalarType>> t = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},   {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort},  {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}, {"C64", at::kComplexFloat}};
  return t;
}

// A JSON value for a one-line message: scalars as written, containers by type (a deeply nested
// value would overflow the stack in dump()).
std::string brief(const nlohmann::json& j) { return j.is_primitive() ? j.dump() : std::string(j.type_name()); }

struct Entry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& j,
                  uint64_t data_size) {
  auto bad = [&](const std::string& what) {
    fail(path, ": safetensors tensor '", name, "': ", what);
  };
  if (!j.is_object()) bad("header entry is not an object, expected {dtype, shape, data_offsets}");
  if (!j.contains("dtype") || !j["dtype"].is_string()) bad("missing string field 'dtype'");
  if (!j.contains("shape") || !j["shape"].is_array()) bad("missing array field 'shape'");
  if (!j.contains("data_offsets") || !j["data_offsets"].is_array() || j["data_offsets"].size() != 2)
    bad("missing field 'data_offsets', expected [begin, end]");
  Entry e{name, at::kFloat, {}, 0, 0};
  const std::string dt = j["dtype"].get<std::string>();
  auto it = std::find_if(dtype_table().begin(), dtype_table().end(),
                         [&](const auto& p) { return p.first == dt; });
  if (it == dtype_table().end())
    bad("unsupported dtype '" + dt + "', expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL C64");
  e.dtype = it->second;
  uint64_t numel = 1;
  bool overflow = false;
  std::string shape = "[";
  for (const auto& d : j["shape"]) {
    if (!d.is_number_unsigned()) bad("shape entry " + brief(d) + " is not a non-negative integer");
    const uint64_t v = d.get<uint64_t>();
    if (shape.size() < 200) shape += (shape.size() > 1 ? ", " : "") + std::to_string(v);
    overflow |= v > (uint64_t(1) << 56) || __builtin_mul_overflow(numel, v, &numel) || numel > (uint64_t(1) << 56);
    e.shape.push_back(static_cast<int64_t>(std::min<uint64_t>(v, uint64_t(1) << 56)));
  }
  if (overflow) bad("shape " + shape + "] has more than 2^56 elements (its product overflows); the file is corrupt");
  for (const auto& o : j["data_offsets"])
    if (!o.is_number_unsigned()) bad("data_offsets entry " + brief(o) + " is not a non-negative integer");
  e.begin = j["data_offsets"][0].get<uint64_t>();
  e.end = j["data_offsets"][1].get<uint64_t>();
  if (e.begin > e.end) bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] has begin > end");
  const uint64_t nbytes = numel * c10::elementSize(e.dtype);
  if (e.end - e.begin != nbytes)
    bad("data_offsets span " + std::to_string(e.end - e.begin) + " bytes, expected " +
        std::to_string(nbytes) + " for dtype " + dt + " and its shape");
  if (e.end > data_size)
    bad("data_offsets end " + std::to_string(e.end) + " is past the data section (" +
        std::to_string(data_size) + " bytes; truncated file?)");
  return e;
}

}  // namespace

TensorList load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  struct stat st {};
  INSTINCT_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open safetensors file: ",
                 std::strerror(errno));
  INSTINCT_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, expected a .safetensors file");
  std::ifstream in(path, std::ios::binary);
  INSTINCT_CHECK(in.is_open(), path, ": cannot open safetensors file: ", std::strerror(errno));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  INSTINCT_CHECK(file_size >= 8, path, ": ", file_size,
                 " bytes is too short for a safetensors file (expected an 8-byte header length)");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int b = 0; b < 8; ++b) header_len |= uint64_t(len_bytes[b]) << (8 * b);
  INSTINCT_CHECK(header_len <= file_size - 8 && header_len <= kMaxHeader, path,
                 ": safetensors header length ", header_len, " exceeds the file size (", file_size,
                 " bytes) or the 100 MiB limit; not a safetensors file or truncated");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  INSTINCT_CHECK(in.gcount() == static_cast<std::streamsize>(header_len), path, ": short read of safetensors header");

  nlohmann::json j;
  std::set<std::string> names;
  std::string twice;  // a tensor name the header gives twice (the JSON reader would keep the last)
  try {
    j = nlohmann::json::parse(header, [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& v) {
      if (ev == nlohmann::json::parse_event_t::key && depth == 1 && !names.insert(v.get<std::string>()).second &&
          twice.empty())
        twice = v.get<std::string>();
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": safetensors header is not valid JSON (", e.what(), ")");
  }
  INSTINCT_CHECK(twice.empty(), path, ": safetensors header names '", printable(twice),
                 "' twice; expected each tensor once");
  INSTINCT_CHECK(j.is_object(), path, ": safetensors header is JSON ", j.type_name(), ", expected an object");

  const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
  std::vector<Entry> entries;
  for (const auto& [name, val] : j.items()) {
    if (name == "__metadata__") {
      INSTINCT_CHECK(val.is_object(), path, ": safetensors __metadata__ is ", val.type_name(),
                     ", expected an object of strings");
      for (const auto& [k, v] : val.items()) {
        INSTINCT_CHECK(v.is_string(), path, ": safetensors __metadata__ value of '", k, "' is ",
                       v.type_name(), ", expected a string");
        if (metadata) (*metadata)[k] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, name, val, data_size));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t k = 1; k < entries.size(); ++k)
    INSTINCT_CHECK(entries[k].begin >= entries[k - 1].end, path, ": safetensors tensors '",
                   entries[k - 1].name, "' and '", entries[k].name,
                   "' have overlapping data_offsets; expected disjoint byte ranges");

  TensorList out;
  out.reserve(entries.size());
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    const auto nbytes = static_cast<std::streamsize>(e.end - e.begin);
    if (nbytes > 0) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      in.read(static_cast<char*>(t.data_ptr()), nbytes);
      INSTINCT_CHECK(in.gcount() == nbytes, path, ": safetensors tensor '", e.name,
                     "': short read (file changed or truncated?)");
    }
    out.emplace_back(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::string& path, const TensorList& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, src] : tensors) {
    INSTINCT_CHECK(!name.empty() && name != "__metadata__", path,
                   ": invalid safetensors tensor name '", name, "'; expected a non-empty name other than __metadata__");
    INSTINCT_CHECK(names.insert(name).second, path, ": duplicate safetensors tensor name '", name, "'");
    INSTINCT_CHECK(src.defined() && src.layout() == at::kStrided, path, ": tensor '", name,
                   "' is undefined or not dense; expected a dense tensor");
    at::Tensor t = src.detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
    auto it = std::find_if(dtype_table().begin(), dtype_table().end(),
                           [&](const auto& p) { return p.second == t.scalar_type(); });
    INSTINCT_CHECK(it != dtype_table().end(), path, ": tensor '", name, "' has dtype ",
                   t.scalar_type(), " which safetensors cannot store here; expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL C64");
    const uint64_t nbytes = t.nbytes();
    header[name] = {{"dtype", it->first}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(t));
  }
  std::string h;
  try {
    h = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": cannot encode safetensors header (", e.what(), "); expected UTF-8 names and metadata");
  }
  h.append((8 - h.size() % 8) % 8, ' ');

  AtomicFile file(path);
  {
    std::ofstream out(file.temp_path(), std::ios::binary | std::ios::trunc);
    INSTINCT_CHECK(out.is_open(), path, ": cannot create '", file.temp_path(), "': ", std::strerror(errno));
    unsigned char len_bytes[8];
    for (int b = 0; b < 8; ++b) len_bytes[b] = static_cast<unsigned char>(uint64_t(h.size()) >> (8 * b));
    out.write(reinterpret_cast<const char*>(len_bytes), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    out.close();
    INSTINCT_CHECK(!out.fail(), path, ": writing '", file.temp_path(), "' failed (disk full?)");
  }
  file.commit();
}

}  // namespace instinct::io
