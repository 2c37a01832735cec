#include "instinct/distill/concept.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "instinct/common/error.h"
#include "instinct/common/progress.h"
#include "instinct/common/random.h"
#include "instinct/common/signals.h"
#include "instinct/compat.h"
#include "instinct/config/config.h"
#include "instinct/data/device_prefetch.h"
#include "instinct/data/loader.h"
#include "instinct/distill/run_utils.h"
#include "instinct/model/trunk_io.h"
#include "instinct/teacher/bundle.h"
#include "instinct/teacher/phrases.h"

namespace instinct::distill {
using json = nlohmann::json;

namespace {

// Grounding outputs for P pairs with logits/presence squeezed: logits (P,Q), presence (P).
struct Ground {
  at::Tensor logits, boxes, masks, presence, memory, queries;
  at::Tensor scores() const { return torch::sigmoid(logits) * torch::sigmoid(presence).unsqueeze(1); }
};

struct Fpn {
  at::Tensor f0, f1, f2;
};

Ground ground(const teacher::TeacherBundle& b, const Fpn& fpn, const at::Tensor& image_idx, const at::Tensor& text,
              const at::Tensor& pad) {
  auto g = b.grounding(fpn.f0.index_select(0, image_idx), fpn.f1.index_select(0, image_idx),
                       fpn.f2.index_select(0, image_idx), text, pad);
  return {g.logits.squeeze(-1).to(torch::kFloat), g.boxes.to(torch::kFloat), g.masks, g.presence.reshape({-1}).to(torch::kFloat),
          g.memory, g.queries};
}

// One (image, concept) prompt of a batch.
struct Pair {
  int64_t image;    // row in the batch
  int64_t concept;  // index into the vocabulary
  bool positive;
};

// The teacher's targets for a set of pairs: kept queries per pair.
struct Targets {
  Ground all;                                   // every query (no grad)
  std::vector<at::Tensor> boxes, masks, logits;  // per pair, kept queries only
  int64_t kept = 0;
};

Targets make_targets(Ground g, double tau_keep) {
  Targets t;
  auto keep = (g.scores() >= tau_keep);
  for (int64_t p = 0; p < g.logits.size(0); ++p) {
    auto idx = keep[p].nonzero().squeeze(1);
    t.boxes.push_back(g.boxes[p].index_select(0, idx));
    t.masks.push_back(g.masks[p].index_select(0, idx));
    t.logits.push_back(g.logits[p].index_select(0, idx));
    t.kept += idx.size(0);
  }
  t.all = std::move(g);
  return t;
}

// Box IoU of matched xyxy boxes (N,4) -> (N,).
at::Tensor box_iou_paired(const at::Tensor& a, const at::Tensor& b) {
  auto lt = torch::max(a.narrow(1, 0, 2), b.narrow(1, 0, 2)), rb = torch::min(a.narrow(1, 2, 2), b.narrow(1, 2, 2));
  auto wh = (rb - lt).clamp_min(0);
  auto inter = wh.select(1, 0) * wh.select(1, 1);
  auto area = [](const at::Tensor& x) { return (x.select(1, 2) - x.select(1, 0)).clamp_min(0) * (x.select(1, 3) - x.select(1, 1)).clamp_min(0); };
  return inter / (area(a) + area(b) - inter).clamp_min(1e-12);
}

double mask_iou(const at::Tensor& a, const at::Tensor& b) {  // bool masks
  const double u = (a | b).sum().item<double>();
  return u > 0 ? (a & b).sum().item<double>() / u : 1.0;
}

}  // namespace

int run_concept(const ConceptConfig& cfg_in) {
  ConceptConfig cfg = cfg_in;
  const Distributed dist = join_data_parallel(cfg.distributed, cfg.device);
  RunContext run = RunContext::open(cfg.run_dir, cfg.device, cfg.precision, cfg.threads, cfg.checkpoint.resume);
  torch::manual_seed(uint64_t(cfg.seed));
  const auto& L = cfg.loss;
  INSTINCT_CHECK(L.mask_kind == "bce" || L.mask_kind == "focal", "loss.mask_kind '", L.mask_kind, "' is unknown; valid: bce, focal");
  INSTINCT_CHECK(cfg.concepts.positives >= 0 && cfg.concepts.min_negatives >= 0 && cfg.concepts.negative_ratio >= 0,
                 "concepts.positives, concepts.min_negatives and concepts.negative_ratio must be >= 0");
  INSTINCT_CHECK(L.temperature > 0, "loss.temperature = ", L.temperature, ": expected > 0");

  // Teacher bundle (trunk, detector neck, grounding, concept bank) and the student's concept bank.
  INSTINCT_CHECK(!cfg.teacher.bundle.empty(), "teacher.bundle must name a teacher bundle directory");
  // Phrases come from the concept bank or, for phrases outside it, the bundle's text encoder.
  auto phrase_mods = [](const std::string& dir) {
    auto m = teacher::phrase_modules(teacher::read_bundle_info(dir));
    return m.empty() ? std::vector<std::string>{"concept_bank"} : m;  // load() then names what is missing
  };
  teacher::BundleLoadOptions bo;
  bo.modules = {"trunk", "detector_neck", "grounding"};
  for (const auto& m : phrase_mods(cfg.teacher.bundle)) bo.modules.push_back(m);
  bo.verify_hashes = cfg.teacher.verify_hashes;
  bo.device = run.device;  // load (and shape-check) where it runs: traced constants follow the load device
  auto teacher = teacher::TeacherBundle::load(cfg.teacher.bundle, bo);
  const auto& tinfo = teacher.info();
  std::unique_ptr<teacher::TeacherBundle> sbank;
  if (!cfg.student_concepts.empty()) {
    teacher::BundleLoadOptions so;
    so.modules = phrase_mods(cfg.student_concepts);
    so.verify_hashes = cfg.teacher.verify_hashes;
    so.device = run.device;
    sbank = std::make_unique<teacher::TeacherBundle>(teacher::TeacherBundle::load(cfg.student_concepts, so));
  }
  const teacher::TeacherBundle& student_bank = sbank ? *sbank : teacher;
  // The student's detector neck: the teacher's (frozen) or, with train_neck, a trainable copy.
  std::unique_ptr<teacher::TeacherBundle> sneck;
  if (cfg.train_neck) {
    teacher::BundleLoadOptions no;
    no.modules = {"detector_neck"};
    no.verify_hashes = cfg.teacher.verify_hashes;
    no.device = run.device;
    sneck = std::make_unique<teacher::TeacherBundle>(teacher::TeacherBundle::load(cfg.teacher.bundle, no));
    for (auto& [name, p] : sneck->named_parameters("detector_neck")) p.requires_grad_(true);
  }
  const teacher::TeacherBundle& student_neck = sneck ? *sneck : teacher;

  // Vocabulary: names -> prompt tokens for the teacher and for the student (rows = vocabulary ids).
  std::vector<std::string> vocab = cfg.concepts.vocabulary;
  if (!cfg.concepts.vocabulary_file.empty())
    for (auto& p : teacher::read_vocabulary(cfg.concepts.vocabulary_file))
      if (std::find(vocab.begin(), vocab.end(), p) == vocab.end()) vocab.push_back(std::move(p));
  if (vocab.empty()) vocab = tinfo.concepts;
  INSTINCT_CHECK(!vocab.empty(), "concepts.vocabulary is empty and the teacher bundle lists no concepts");
  const auto t_phr = teacher::encode_phrases(teacher, vocab, run.device, "concepts.vocabulary: concept");
  const auto s_phr = sbank ? teacher::encode_phrases(student_bank, vocab, run.device,
                                                     "concepts.vocabulary (student bank " + cfg.student_concepts + "): concept")
                           : t_phr;
  if (t_phr.from_encoder > 0)
    spdlog::info("vocabulary: {} concepts from the concept bank, {} encoded by the teacher's text encoder", t_phr.from_bank,
                 t_phr.from_encoder);
  INSTINCT_CHECK(s_phr.text.size(2) == tinfo.neck_channels, "student concept bank (",
                 cfg.student_concepts.empty() ? cfg.teacher.bundle : cfg.student_concepts, ") gives text of width ",
                 s_phr.text.size(2), " but the grounding module expects ", tinfo.neck_channels);

  // Student.
  resolve_student_shape(cfg.student, tinfo);
  INSTINCT_CHECK(cfg.student.out_grid == tinfo.trunk_grid && cfg.student.out_channels == tinfo.trunk_channels,
                 "student output ", cfg.student.out_channels, "x", cfg.student.out_grid, "x", cfg.student.out_grid,
                 " must match the teacher trunk ", tinfo.trunk_channels, "x", tinfo.trunk_grid, "x", tinfo.trunk_grid,
                 " to feed its neck");
  model::StudentTrunk student(cfg.student);
  student->to(run.device);
  model::StudentTrunk ema_model{nullptr};

  data::PreprocessConfig pre;
  pre.image_size = tinfo.image_size;
  pre.resize = cfg.data.resize.empty() ? tinfo.resize : cfg.data.resize;
  pre.mean = tinfo.pixel_mean;
  pre.std = tinfo.pixel_std;
  auto datasets = make_datasets(cfg.data);
  data::LoaderConfig lc;
  lc.batch_size = cfg.batch_size;
  lc.num_workers = cfg.data.workers;
  lc.prefetch_batches = cfg.data.prefetch;
  lc.seed = uint64_t(cfg.seed);
  lc.max_bad_fraction = cfg.data.max_bad_fraction;
  lc.pin_memory = run.device.is_cuda();
  lc.rank = dist.rank();
  lc.world_size = dist.world_size();
  data::Loader loader(datasets.first, pre, lc);
  const int64_t batches_per_epoch = loader.batches_per_epoch();
  INSTINCT_CHECK(batches_per_epoch > 0, "data: ", datasets.first->size(), " training images give no full batch of ",
                 cfg.batch_size, " (lower batch_size)");
  const StepPlan plan = plan_steps(cfg.optim, batches_per_epoch, cfg.batch_size * dist.world_size());
  const int accum = plan.accum;
  const int64_t total_steps = plan.total_steps, warmup_steps = plan.warmup_steps;
  const double peak_lr = plan.peak_lr;

  // Region-text projection of the student's query embeddings (a training aid, not part of the released
  // trunk): identity-initialised, trained with the trunk, saved in checkpoints under 'heads'.
  torch::nn::Linear align_proj(tinfo.neck_channels, tinfo.neck_channels);
  {
    torch::NoGradGuard ng;
    align_proj->weight.copy_(torch::eye(tinfo.neck_channels));
    align_proj->bias.zero_();
  }
  align_proj->to(run.device);
  auto params = trainable_parameters(*student);
  std::vector<std::pair<std::string, at::Tensor>> heads;
  if (L.w_align > 0) heads = {{"align_proj.weight", align_proj->weight}, {"align_proj.bias", align_proj->bias}};
  if (sneck)
    for (auto& [name, p] : sneck->named_parameters("detector_neck")) heads.emplace_back("detector_neck." + name, p);
  params.insert(params.end(), heads.begin(), heads.end());
  AdamW opt(params, cfg.optim);
  spdlog::info("optimizer: AdamW with {} kernels", kernel_name(opt.kernel()));
  std::unique_ptr<Ema> ema;
  if (cfg.ema.enabled) {
    ema_model = model::StudentTrunk(cfg.student);
    ema_model->to(run.device);
    ema_model->eval();
  }
  TrainState st;
  if (!run.resume_from.empty()) {
    if (cfg.ema.enabled) ema = std::make_unique<Ema>(*student, *ema_model, cfg.ema, opt.kernel());
    st = load_checkpoint(run.resume_from, *student, opt, ema.get(), ema ? ema_model.get() : nullptr, heads);
    spdlog::info("resumed from {} at step {} (epoch {}, batch {})", run.resume_from, st.step, st.epoch, st.batch_in_epoch);
  } else {
    if (cfg.init.from == "random")
      spdlog::warn("init.from is random: concept distillation normally starts from a Stage A trunk (init.from=instinct init.path=...)");
    init_student(*student, cfg.init);
    if (cfg.ema.enabled) ema = std::make_unique<Ema>(*student, *ema_model, cfg.ema, opt.kernel());
  }
  spdlog::info("student: {} ({:.1f}M params); teacher {}: vocabulary {} concepts, {} queries", model::backbone_name(student->config()),
               model::num_parameters(*student) / 1e6, tinfo.name, vocab.size(), tinfo.num_queries);
  resume_position(st, int64_t(cfg.batch_size) * dist.world_size());
  {  // every rank starts from rank 0's trunk, EMA and trainable heads
    std::vector<at::Tensor> sync = module_tensors(*student);
    if (ema_model) for (auto& t : module_tensors(*ema_model)) sync.push_back(t);
    for (auto& [name, t] : heads) sync.push_back(t);
    dist.broadcast(sync);
  }
  if (dist.is_main()) run.write_resolved_config(config::to_yaml(cfg));
  MetricsLog metrics(dist.is_main() ? cfg.run_dir + "/metrics.jsonl" : std::string(), st.step, !run.resume_from.empty());

  // Model pieces shared by training and evaluation.
  auto teacher_fpn = [&](const at::Tensor& images, at::Tensor* feats) {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(run.autocast);
    auto f = teacher.trunk(images);
    if (feats) *feats = f.to(torch::kFloat);
    auto [a, b, c] = teacher.detector_neck(f);
    return Fpn{a, b, c};
  };
  auto student_fpn = [&](model::StudentTrunkImpl& m, const at::Tensor& images, at::Tensor* feats) {
    auto f = m.forward(resize_images(images, m.config().img_size));
    if (feats) *feats = f;
    auto [a, b, c] = student_neck.detector_neck(f);
    return Fpn{a, b, c};
  };
  auto text_of = [&](const teacher::PhraseTable& table, const at::Tensor& vocab_ids) {
    return std::make_pair(table.text.index_select(0, vocab_ids), table.pad.index_select(0, vocab_ids));
  };
  // Teacher's top score of every scanned concept of every image: (B, n_scan) with the scanned vocabulary indices.
  auto scan_scores = [&](const Fpn& fpn, int64_t B, const std::vector<int64_t>& scan) {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(run.autocast);
    const int64_t n = int64_t(scan.size());
    auto vi = torch::tensor(scan, torch::kLong).to(run.device);
    auto img = torch::arange(B, torch::TensorOptions().dtype(torch::kLong).device(run.device)).repeat_interleave(n);
    auto [text, pad] = text_of(t_phr, vi.repeat({B}));
    return ground(teacher, fpn, img, text, pad).scores().amax(1).view({B, n}).cpu();
  };
  auto pick_pairs = [&](const at::Tensor& top, const std::vector<int64_t>& scan, uint64_t& rng) {
    std::vector<Pair> pairs;
    for (int64_t b = 0; b < top.size(0); ++b) {
      std::vector<int64_t> pos, neg;
      for (size_t k = 0; k < scan.size(); ++k)
        (top[b][int64_t(k)].item<double>() >= cfg.concepts.positive_threshold ? pos : neg).push_back(scan[k]);
      portable_shuffle(pos, rng);
      portable_shuffle(neg, rng);
      pos.resize(std::min(pos.size(), size_t(cfg.concepts.positives)));
      const size_t n_neg = std::min(neg.size(), size_t(std::max<double>(cfg.concepts.min_negatives,
                                                                        std::lround(cfg.concepts.negative_ratio * double(pos.size())))));
      for (auto c : pos) pairs.push_back({b, c, true});
      for (size_t k = 0; k < n_neg; ++k) pairs.push_back({b, neg[k], false});
    }
    return pairs;
  };
  auto pair_tensors = [&](const std::vector<Pair>& pairs) {
    std::vector<int64_t> img, con;
    for (const auto& p : pairs) { img.push_back(p.image); con.push_back(p.concept); }
    return std::make_pair(torch::tensor(img, torch::kLong).to(run.device), torch::tensor(con, torch::kLong).to(run.device));
  };
  auto teacher_targets = [&](const Fpn& fpn, const at::Tensor& img, const at::Tensor& con) {
    torch::NoGradGuard ng;
    compat::CudaAutocast ac(run.autocast);
    auto [text, pad] = text_of(t_phr, con);
    return make_targets(ground(teacher, fpn, img, text, pad), L.tau_keep);
  };
  std::vector<int64_t> full_scan(vocab.size());
  std::iota(full_scan.begin(), full_scan.end(), 0);

  // Held-out set: images, fixed pairs (every present concept + min(1, min_negatives) absent ones per image).
  struct EvalBatch {
    at::Tensor images;        // CPU
    std::vector<Pair> pairs;
    Targets targets;          // CPU
    at::Tensor teacher_feats; // CPU fp16
  };
  std::vector<EvalBatch> evset;
  {
    data::LoaderConfig elc = lc;
    elc.shuffle = false;
    elc.drop_last = false;
    elc.pin_memory = false;
    data::Loader el(datasets.second, pre, elc);
    el.start_epoch(0);
    uint64_t rng{uint64_t(cfg.seed) ^ 0xe7a1ULL};
    int64_t n_pos = 0, n_pairs = 0;
    while (auto b = el.next()) {
      auto images = b->images.to(run.device);
      at::Tensor feats;
      auto fpn = teacher_fpn(images, &feats);
      auto top = scan_scores(fpn, images.size(0), full_scan);
      std::vector<Pair> pairs;
      for (int64_t i = 0; i < top.size(0); ++i) {
        std::vector<int64_t> neg;
        for (size_t k = 0; k < vocab.size(); ++k) {
          if (top[i][int64_t(k)].item<double>() >= cfg.concepts.positive_threshold) pairs.push_back({i, int64_t(k), true});
          else neg.push_back(int64_t(k));
        }
        portable_shuffle(neg, rng);
        if (!neg.empty()) pairs.push_back({i, neg[0], false});
      }
      if (pairs.empty()) continue;
      auto [img, con] = pair_tensors(pairs);
      auto t = teacher_targets(fpn, img, con);
      for (auto* v : {&t.boxes, &t.masks, &t.logits})
        for (auto& x : *v) x = x.cpu();
      t.all = Ground{t.all.logits.cpu(), t.all.boxes.cpu(), at::Tensor(), t.all.presence.cpu(), at::Tensor(), at::Tensor()};
      for (const auto& p : pairs) n_pos += p.positive;
      n_pairs += int64_t(pairs.size());
      evset.push_back({b->images, pairs, std::move(t), feats.cpu().to(torch::kHalf)});
    }
    INSTINCT_CHECK(!evset.empty(), "held-out set gives no concept pairs (every image unreadable?)");
    spdlog::info("held-out: {} images, {} concept pairs ({} present per the teacher)", datasets.second->size(), n_pairs, n_pos);
  }

  auto evaluate = [&](model::StudentTrunkImpl& m) {
    torch::NoGradGuard ng;
    const bool was_training = m.is_training();
    m.eval();
    compat::CudaAutocast ac(run.autocast);
    double miou = 0, biou = 0, n_match = 0, pres_agree = 0, n_pairs = 0, ciou = 0, n_pos = 0, fp_neg = 0, n_neg = 0;
    double cos = 0, n_img = 0;
    for (const auto& eb : evset) {
      at::Tensor feats;
      auto images = eb.images.to(run.device);
      auto fpn = student_fpn(m, images, &feats);
      auto t = eb.teacher_feats.to(run.device).to(torch::kFloat);
      cos += torch::cosine_similarity(feats.to(torch::kFloat), t, 1, 1e-8).mean({1, 2}).sum().item<double>();
      n_img += double(images.size(0));
      auto [img, con] = pair_tensors(eb.pairs);
      auto [text, pad] = text_of(s_phr, con);
      auto s = ground(teacher, fpn, img, text, pad);
      auto s_cpu_logits = s.logits.cpu(), s_cpu_boxes = s.boxes.cpu();
      auto matches = hungarian_match_batch(s_cpu_logits, s_cpu_boxes, eb.targets.boxes, L.match);
      auto s_scores = s.scores().cpu();
      auto s_masks = s.masks.to(torch::kFloat).cpu();
      for (size_t p = 0; p < eb.pairs.size(); ++p) {
        const auto ip = int64_t(p);
        for (const auto& [q, k] : matches[p]) {
          miou += mask_iou(s_masks[ip][q] > 0, eb.targets.masks[p][k].to(torch::kFloat) > 0);
          biou += box_iou_paired(box_cxcywh_to_xyxy(s_cpu_boxes[ip][q].unsqueeze(0)),
                                 box_cxcywh_to_xyxy(eb.targets.boxes[p][k].unsqueeze(0))).item<double>();
          n_match += 1;
        }
        const bool sp = torch::sigmoid(s.presence[ip]).item<double>() >= 0.5;
        const bool tp = torch::sigmoid(eb.targets.all.presence[ip]).item<double>() >= 0.5;
        pres_agree += sp == tp;
        n_pairs += 1;
        auto kept = (s_scores[ip] >= L.tau_keep).nonzero().squeeze(1);
        auto su = kept.size(0) > 0 ? (s_masks[ip].index_select(0, kept) > 0).any(0) : torch::zeros({s_masks.size(2), s_masks.size(3)}, torch::kBool);
        const auto& tm = eb.targets.masks[p];
        if (tm.size(0) > 0) {
          auto tu = (tm.to(torch::kFloat) > 0).any(0);
          ciou += mask_iou(su, tu);
          n_pos += 1;
        } else {
          fp_neg += kept.size(0) > 0;
          n_neg += 1;
        }
      }
    }
    if (was_training) m.train();
    auto div = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    return json{{"concept_mask_iou", div(ciou, n_pos)}, {"matched_mask_iou", div(miou, n_match)},
                {"matched_box_iou", div(biou, n_match)}, {"presence_agreement", div(pres_agree, n_pairs)},
                {"negative_false_positive_rate", div(fp_neg, n_neg)}, {"trunk_cosine", div(cos, n_img)}};
  };
  auto log_eval = [&](const char* split, const json& r) {
    json row = {{"step", st.step}, {"split", split}};
    row.update(r);
    metrics.write(row);
    spdlog::info("eval[{}] step {}: concept mask IoU {:.4f}, matched mask IoU {:.4f}, box IoU {:.4f}, presence agreement {:.3f}, "
                 "negative FP rate {:.3f}, trunk cosine {:.4f}", split, st.step, r["concept_mask_iou"].get<double>(),
                 r["matched_mask_iou"].get<double>(), r["matched_box_iou"].get<double>(), r["presence_agreement"].get<double>(),
                 r["negative_false_positive_rate"].get<double>(), r["trunk_cosine"].get<double>());
  };
  CheckpointKeeper keeper(cfg.run_dir, cfg.checkpoint.keep_last, cfg.checkpoint.keep_best);
  auto save_ckpt = [&](bool best) {
    keeper.save(st, *student, opt, ema.get(), ema ? ema_model.get() : nullptr, config::to_yaml(cfg), "concept", best, heads);
  };
  if (st.step == 0 && st.epoch == 0 && st.batch_in_epoch == 0 && dist.is_main()) log_eval("eval", evaluate(*student));

  // Training.
  MaskLossConfig mcfg;
  mcfg.kind = L.mask_kind == "focal" ? MaskLossKind::focal : MaskLossKind::bce;
  mcfg.num_points = L.mask_points;
  ClassKdConfig kcfg;
  kcfg.temperature = L.temperature;
  kcfg.w_unmatched = L.w_unmatched;
  ClockConfig ccfg;
  ccfg.alpha = L.clock_alpha;
  ccfg.beta = L.clock_beta;
  const LossConfig trunk_cfg;  // Stage A's loss: (1 - cosine) + channel-summed squared error
  const std::vector<std::string> terms{"class", "presence", "l1", "giou", "mask", "dice", "memory", "align", "trunk"};
  std::map<std::string, at::Tensor> acc;
  for (const auto& k : terms) acc[k] = torch::zeros({}, torch::TensorOptions().device(run.device));
  acc["loss"] = torch::zeros({}, torch::TensorOptions().device(run.device));
  acc["grad_norm"] = torch::zeros({}, torch::TensorOptions().device(run.device));  // pre-clip, x accum: averages per step
  // Step-time split: data wait, teacher, student forward, matching, losses, backward, optimizer.
  PhaseTimer timer(cfg.profile, run.device);
  double win_pairs = 0, win_pos = 0, win_targets = 0;
  int64_t win_batches = 0, win_images = 0, images_seen = 0;
  auto win_t0 = std::chrono::steady_clock::now();
  std::map<std::string, double> last_row;

  install_stop_handlers();
  student->freeze_batchnorm_stats(!cfg.batchnorm_stats);
  student->train();
  Progress progress("concept", total_steps, cfg.log.progress);
  int micro = 0, stopped = 0;
  int64_t epoch = st.epoch;
  std::vector<at::Tensor> trained;
  for (const auto& kv : opt.params()) trained.push_back(kv.second);
  GradientReducer reducer(dist, trained, cfg.distributed);
  if (reducer.buckets() > 0) spdlog::info("gradient all-reduce overlapped with backward: {} buckets", reducer.buckets());
  data::DevicePrefetcher feed(loader, run.device);
  while (st.step < total_steps && !stopped) {
    feed.start_epoch(epoch, st.batch_in_epoch);
    while (st.step < total_steps) {
      timer.start();
      auto batch = feed.next();
      if (!batch) break;
      timer.lap("data");
      auto images = batch->images;
      const int64_t B = images.size(0);
      // Concept sampling from the teacher's view of the vocabulary (deterministic in seed, epoch, batch).
      uint64_t rng{uint64_t(cfg.seed) * 0x100000001b3ULL ^ uint64_t(epoch) << 32 ^ uint64_t(batch->batch_index)};
      at::Tensor tfeat;
      auto tfpn = teacher_fpn(images, L.w_trunk > 0 ? &tfeat : nullptr);
      std::vector<int64_t> scan = full_scan;
      if (cfg.concepts.scan > 0 && size_t(cfg.concepts.scan) < scan.size()) {
        portable_shuffle(scan, rng);
        scan.resize(size_t(cfg.concepts.scan));
        std::sort(scan.begin(), scan.end());
      }
      auto pairs = pick_pairs(scan_scores(tfpn, B, scan), scan, rng);
      if (pairs.empty()) {  // e.g. positives: 0 and min_negatives: 0 on images without present concepts
        st.batch_in_epoch = batch->batch_index + 1;
        continue;
      }
      auto [img, con] = pair_tensors(pairs);
      auto tg = teacher_targets(tfpn, img, con);
      timer.lap("teacher");

      std::map<std::string, at::Tensor> l;
      {
        compat::CudaAutocast ac(run.autocast);
        at::Tensor sfeat;
        auto sfpn = student_fpn(*student, images, L.w_trunk > 0 ? &sfeat : nullptr);
        auto [text, pad] = text_of(s_phr, con);
        auto s = ground(teacher, sfpn, img, text, pad);
        timer.lap("student_forward");
        auto matches = hungarian_match_batch(s.logits, s.boxes, tg.boxes, L.match);
        timer.lap("matching");
        l["class"] = class_kd_loss(s.logits, tg.logits, tg.all.presence, matches, kcfg);
        l["presence"] = presence_kd_loss(s.presence, tg.all.presence, L.temperature);
        auto bl = box_loss(s.boxes, tg.boxes, matches);
        l["l1"] = bl.l1;
        l["giou"] = bl.giou;
        auto ml = mask_loss(s.masks, tg.masks, matches, mcfg);
        l["mask"] = ml.mask;
        l["dice"] = ml.dice;
        l["memory"] = L.w_memory > 0 ? clock_memory_loss(s.memory, tg.all.memory, tg.boxes, ccfg) : torch::zeros({}, images.options());
        if (L.w_align > 0) {
          // Concept embeddings of the batch's distinct concepts (pooled student text tokens).
          std::map<int64_t, int64_t> slot;
          std::vector<int64_t> uniq, pc;
          for (const auto& p : pairs) {
            auto it = slot.emplace(p.concept, int64_t(uniq.size()));
            if (it.second) uniq.push_back(p.concept);
            pc.push_back(it.first->second);
          }
          auto [ut, up] = text_of(s_phr, torch::tensor(uniq, torch::kLong).to(run.device));
          auto concepts = pool_text_embeddings(ut.to(torch::kFloat), up).detach();
          l["align"] = region_text_loss(align_proj->forward(s.queries.to(torch::kFloat)), matches, torch::tensor(pc, torch::kLong).to(run.device),
                                        concepts, L.align_tau);
        } else {
          l["align"] = torch::zeros({}, images.options());
        }
        l["trunk"] = L.w_trunk > 0 ? stage_a_loss(sfeat, tfeat, {}, trunk_cfg).total : torch::zeros({}, images.options());
      }
      const std::map<std::string, double> w{{"class", L.w_class}, {"presence", L.w_presence}, {"l1", L.w_l1},
                                            {"giou", L.w_giou}, {"mask", L.w_mask}, {"dice", L.w_dice},
                                            {"memory", L.w_memory}, {"align", L.w_align}, {"trunk", L.w_trunk}};
      at::Tensor total = torch::zeros({}, torch::TensorOptions().device(run.device));
      for (const auto& k : terms) {
        total = total + w.at(k) * l[k].to(torch::kFloat);
        acc[k] += l[k].detach().to(torch::kFloat);
      }
      timer.lap("losses");
      reducer.prepare(micro + 1 == accum);
      (total / accum).backward();
      timer.lap("backward");
      acc["loss"] += total.detach();
      for (const auto& p : pairs) win_pos += p.positive;
      win_pairs += double(pairs.size());
      win_targets += double(tg.kept);
      ++win_batches;
      win_images += B;
      images_seen += B;
      st.batch_in_epoch = batch->batch_index + 1;
      if (++micro < accum) continue;
      micro = 0;
      reducer.finish();
      if (dist.enabled()) timer.lap("allreduce");
      acc["grad_norm"] += clip_grad_norm(opt.params(), cfg.optim.grad_clip, opt.kernel()).to(acc["loss"].device()) * double(accum);
      const double lr = lr_at(st.step, total_steps, warmup_steps, peak_lr, cfg.optim.warmup_lr, cfg.optim.min_lr);
      opt.step(lr);
      opt.zero_grad();
      if (ema) ema->update();
      timer.lap("optimizer");
      ++st.step;
      const bool last = st.step >= total_steps;
      if (st.step % std::max<int64_t>(cfg.log.every, 1) == 0 || last) {
        const double nb = double(std::max<int64_t>(win_batches, 1));
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - win_t0).count();
        json row = {{"step", st.step}, {"split", "train"}, {"epoch", epoch}, {"lr", lr},
                    {"pairs_per_image", win_pairs / double(std::max<int64_t>(win_images, 1))},
                    {"positive_fraction", win_pairs > 0 ? win_pos / win_pairs : 0.0},
                    {"targets_per_pair", win_pairs > 0 ? win_targets / win_pairs : 0.0},
                    {"images_per_s", dt > 0 ? double(win_images) / dt : 0.0}};
        for (auto& [k, v] : acc) {
          last_row[k] = v.item<double>() / nb;
          row[k == "loss" || k == "grad_norm" ? k : "loss_" + k] = last_row[k];
          v.zero_();
        }
        timer.write(row, win_batches);
        metrics.write(row);
        win_pairs = win_pos = win_targets = 0;
        win_batches = win_images = 0;
        win_t0 = std::chrono::steady_clock::now();
      }
      char fields[160];
      if (last_row.empty()) std::snprintf(fields, sizeof fields, "loss - | lr %.2e", lr);
      else std::snprintf(fields, sizeof fields, "loss %.4g | mask %.3f | cls %.3f | lr %.2e", last_row["loss"], last_row["mask"], last_row["class"], lr);
      progress.update(st.step, fields, double(images_seen), "img");
      auto eval_both = [&] {
        auto r = evaluate(*student);
        log_eval("eval", r);
        if (ema) log_eval("eval_ema", evaluate(*ema_model));
        return r["concept_mask_iou"].get<double>();
      };
      if ((stopped = finish_step(st, epoch, last, cfg.eval, cfg.checkpoint, progress, eval_both, save_ckpt, dist)) != 0) break;
    }
    if (!stopped && st.step < total_steps) {
      ++epoch;
      st.batch_in_epoch = 0;
      st.epoch = epoch;
    }
  }
  progress.finish();
  if (!dist.is_main()) return stopped ? 128 + stopped : 0;
  const int rc = finish_run(stopped, st, total_steps, loader.num_skipped(), cfg.run_dir, *student,
                            ema ? ema_model.get() : nullptr);
  if (rc == 0 && sneck) {
    sneck->save_module("detector_neck", cfg.run_dir + "/detector_neck.pt");
    spdlog::info("fine-tuned detector neck written to {}/detector_neck.pt", cfg.run_dir);
  }
  return rc;
}

}  // namespace instinct::distill
